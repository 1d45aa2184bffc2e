"""What a policy printed and logged comes back in the HTTP decision answer, and only then."""

from __future__ import annotations

import httpx
from policy_sources import ALLOW_ALL, eval_body
from test_api import published

CHATTY = eval_body(
    """
    print("checking", input_data["node"])
    logging.getLogger("gpu-guard").warning("node %s has no GPU", input_data["node"])
    return {"allowed": False, "input_data": input_data}
    """,
    prelude="import logging",
)


def test_printed_output_and_log_records_come_back_with_the_decision(
    api: httpx.Client, unique_name: str
) -> None:
    uri = published(api, unique_name, CHATTY)
    answer = api.post(f"/policies/{uri}/eval", json={"input_data": {"node": "n-7"}})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["result"]["allowed"] is False
    assert body["printed"] == "checking n-7\n"
    assert [(r["level"], r["message"]) for r in body["logs"]] == [
        ("WARNING", "node n-7 has no GPU")
    ]


def test_a_silent_policy_answers_without_output_fields(
    api: httpx.Client, unique_name: str
) -> None:
    uri = published(api, unique_name, ALLOW_ALL)
    body = api.post(f"/policies/{uri}/eval", json={"input_data": {}}).json()
    assert body["ok"] is True
    assert "printed" not in body and "logs" not in body
