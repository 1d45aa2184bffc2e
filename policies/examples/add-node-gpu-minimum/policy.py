"""Pre-check for add_node: a new node must bring enough GPUs with enough memory each."""


class AIOSv1PolicyRule:
    def __init__(self, rule_id, settings, parameters):
        self.rule_id = rule_id
        self.min_gpus = parameters.get("min_gpus", 1)
        self.min_gpu_memory_mb = parameters.get("min_gpu_memory_mb", 16384)

    def deny(self, input_data, reason):
        return {"allowed": False, "input_data": input_data, "reason": reason}

    def eval(self, parameters, input_data, context):
        node = input_data.get("node", {})
        gpus = node.get("gpus", {})
        models = gpus.get("gpus", [])
        if gpus.get("count", 0) < self.min_gpus:
            return self.deny(
                input_data,
                f"node {node.get('id', '?')} has {gpus.get('count', 0)} GPUs; "
                f"at least {self.min_gpus} required",
            )
        small = [g["modelName"] for g in models if g.get("memory", 0) < self.min_gpu_memory_mb]
        if small:
            return self.deny(
                input_data,
                f"GPUs below {self.min_gpu_memory_mb} MiB: {', '.join(sorted(set(small)))}",
            )
        return {"allowed": True, "input_data": input_data}
