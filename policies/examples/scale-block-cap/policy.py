"""Pre-check for scale_block: cap replicas per block and the size of one scaling step."""

import math


class AIOSv1PolicyRule:
    def __init__(self, rule_id, settings, parameters):
        self.max_replicas = parameters.get("max_replicas", 8)
        self.max_step = parameters.get("max_step", 2)
        self.per_block = parameters.get("per_block_max_replicas", {})

    def eval(self, parameters, input_data, context):
        block_id = input_data["block_id"]
        current = input_data["current_replicas"]
        requested = input_data["requested_replicas"]
        cap = self.per_block.get(block_id, self.max_replicas)
        if requested > cap:
            # Rewrite the request down to the cap instead of refusing it outright.
            step = min(cap - current, self.max_step)
            if step <= 0:
                return {
                    "allowed": False,
                    "input_data": input_data,
                    "reason": f"block {block_id} is already at its cap of {cap} replicas",
                }
            rewritten = dict(input_data)
            rewritten["requested_replicas"] = current + step
            return {"allowed": True, "input_data": rewritten, "reason": f"capped at {cap}"}
        if abs(requested - current) > self.max_step:
            steps = math.ceil(abs(requested - current) / self.max_step)
            return {
                "allowed": False,
                "input_data": input_data,
                "reason": f"scale by at most {self.max_step} replicas at a time "
                f"({steps} steps needed)",
            }
        return {"allowed": True, "input_data": input_data}
