"""Pre-check for add_cluster: the region and every country must be on the allow-lists."""

import re


class AIOSv1PolicyRule:
    def __init__(self, rule_id, settings, parameters):
        self.region_patterns = [re.compile(p) for p in parameters.get("allowed_regions", [])]
        self.countries = set(parameters.get("allowed_countries", []))

    def eval(self, parameters, input_data, context):
        cluster = input_data.get("cluster", input_data)
        region = cluster.get("regionId", "")
        if not any(p.fullmatch(region) for p in self.region_patterns):
            return {
                "allowed": False,
                "input_data": input_data,
                "reason": f"region {region!r} is not allowed",
            }
        countries = cluster.get("clusterMetadata", {}).get("countries", [])
        outside = sorted(c for c in countries if c not in self.countries)
        if outside:
            return {
                "allowed": False,
                "input_data": input_data,
                "reason": "countries not allowed: " + ", ".join(outside),
            }
        return {"allowed": True, "input_data": input_data}
