"""Pre-check for remove_node: removals only inside the maintenance windows (UTC)
given as parameters, and never below a minimum number of nodes.

Input: {"cluster_id", "node_id", "cluster": <cluster document>, "requested_at"?: ISO time
(default: now)}."""

from datetime import datetime, timezone

DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class AIOSv1PolicyRule:
    def __init__(self, rule_id, settings, parameters):
        self.rule_id = rule_id

    def in_window(self, moment, window):
        day = DAYS[moment.weekday()]
        start_h, start_m = [int(x) for x in window["start"].split(":")]
        end_h, end_m = [int(x) for x in window["end"].split(":")]
        minutes = moment.hour * 60 + moment.minute
        return day in window["days"] and start_h * 60 + start_m <= minutes < end_h * 60 + end_m

    def eval(self, parameters, input_data, context):
        # a governed remove_node hands {"cluster_id", "node_id", "cluster"}: the decision
        # is taken now; a dry /pre-check call may say when the removal is planned
        requested = input_data.get("requested_at")
        if requested:
            moment = datetime.fromisoformat(requested).astimezone(timezone.utc)
        else:
            moment = datetime.now(timezone.utc)
        remaining = input_data["cluster"]["nodes"]["count"] - 1
        if remaining < parameters["min_nodes"]:
            return {
                "allowed": False,
                "input_data": input_data,
                "reason": f"removal would leave {remaining} nodes; minimum is {parameters['min_nodes']}",
            }
        windows = parameters["windows"]
        if not any(self.in_window(moment, w) for w in windows):
            names = ", ".join(f"{'/'.join(w['days'])} {w['start']}-{w['end']}" for w in windows)
            return {
                "allowed": False,
                "input_data": input_data,
                "reason": f"{moment.isoformat()} is outside the maintenance windows ({names} UTC)",
            }
        return {"allowed": True, "input_data": input_data}
