"""Pre-check for update_cluster: only listed fields may change; system fields never."""


class AIOSv1PolicyRule:
    def __init__(self, rule_id, settings, parameters):
        self.allowed_prefixes = parameters.get("allowed_fields", [])
        self.protected_prefixes = parameters.get("protected_fields", [])

    def matches(self, field, prefixes):
        return any(field == p or field.startswith(p + ".") for p in prefixes)

    def eval(self, parameters, input_data, context):
        update = input_data.get("update", {})
        protected = sorted(f for f in update if self.matches(f, self.protected_prefixes))
        if protected:
            return {
                "allowed": False,
                "input_data": input_data,
                "reason": "protected fields cannot be updated: " + ", ".join(protected),
            }
        unknown = sorted(f for f in update if not self.matches(f, self.allowed_prefixes))
        if unknown:
            return {
                "allowed": False,
                "input_data": input_data,
                "reason": "fields not open for update: " + ", ".join(unknown),
            }
        return {"allowed": True, "input_data": input_data}
