"""Stability checker: a cluster is stable while enough nodes are healthy.

Input: {"cluster_data": <cluster document>, "nodes_data": [{"id", "cpu_percent",
"memory_percent", "gpus": [{"health": "ok"|..., "temperature_c"}], "ready"}]}.
"""

import statistics


class AIOSv1PolicyRule:
    def __init__(self, rule_id, settings, parameters):
        self.parameters = dict(parameters)

    def node_problems(self, node, p):
        problems = []
        if not node.get("ready", True):
            problems.append("not ready")
        if node.get("cpu_percent", 0) > p["max_cpu_percent"]:
            problems.append(f"cpu {node['cpu_percent']}%")
        if node.get("memory_percent", 0) > p["max_memory_percent"]:
            problems.append(f"memory {node['memory_percent']}%")
        for index, gpu in enumerate(node.get("gpus", [])):
            if gpu.get("health", "ok") != "ok":
                problems.append(f"gpu{index} {gpu['health']}")
            elif gpu.get("temperature_c", 0) > p["max_gpu_temperature_c"]:
                problems.append(f"gpu{index} {gpu['temperature_c']}C")
        return problems

    def eval(self, parameters, input_data, context):
        p = {**self.parameters, **parameters}
        nodes = input_data.get("nodes_data", [])
        unstable = {}
        for node in nodes:
            problems = self.node_problems(node, p)
            if problems:
                unstable[node.get("id", "?")] = problems
        healthy = len(nodes) - len(unstable)
        ratio = healthy / len(nodes) if nodes else 0.0
        cpu = [n.get("cpu_percent", 0) for n in nodes]
        return {
            "is_stable": bool(nodes) and ratio >= p["min_healthy_ratio"],
            "stability_check_data": {
                "cluster_id": input_data.get("cluster_data", {}).get("id"),
                "nodes": len(nodes),
                "healthy_nodes": healthy,
                "healthy_ratio": round(ratio, 3),
                "mean_cpu_percent": round(statistics.mean(cpu), 1) if cpu else None,
                "unstable_nodes": unstable,
            },
        }

    def management(self, action, data):
        if action == "set_thresholds":
            unknown = sorted(k for k in data if k not in self.parameters)
            if unknown:
                return {"status": "error", "message": "unknown thresholds: " + ", ".join(unknown)}
            self.parameters.update(data)
            return {"status": "success", "parameters": self.parameters}
        if action == "get_thresholds":
            return {"status": "success", "parameters": self.parameters}
        return {"status": "error", "message": f"unknown action {action!r}"}
