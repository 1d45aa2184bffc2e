# The update_cluster field guard of policies/examples/update-cluster-field-guard/policy.py
# in Rego, for the side-by-side in decision_latency.py: only listed fields may change,
# system fields never. ``data.parameters`` holds the policy's parameters, ``input`` the
# decision's input_data; ``decision`` is the same answer the Python policy returns.
package aios.update_cluster_field_guard

import rego.v1

update := object.get(input, "update", {})

matches(field, prefixes) if {
	some p in prefixes
	field == p
}

matches(field, prefixes) if {
	some p in prefixes
	startswith(field, concat("", [p, "."]))
}

protected := sort([f | some f, _ in update; matches(f, data.parameters.protected_fields)])

unknown := sort([f | some f, _ in update; not matches(f, data.parameters.allowed_fields)])

decision := {
	"allowed": false,
	"input_data": input,
	"reason": concat("", ["protected fields cannot be updated: ", concat(", ", protected)]),
} if {
	count(protected) > 0
} else := {
	"allowed": false,
	"input_data": input,
	"reason": concat("", ["fields not open for update: ", concat(", ", unknown)]),
} if {
	count(unknown) > 0
} else := {"allowed": true, "input_data": input}
