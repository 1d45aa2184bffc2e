"""Calling a runtime's upstream-style ``execute_policy`` over HTTP.

Used by the policies system to forward to an executor, and by a controller in remote
mode to reach the policies system. One retry on connection errors; any failure is a
RemoteExecutionError whose message says where and why, so that callers can fail closed.
"""

from __future__ import annotations

from typing import Any

import httpx

CONNECT_RETRIES = 1


class RemoteExecutionError(Exception):
    """The remote side could not be reached or did not answer with a result."""


class RemoteUnreachable(RemoteExecutionError):
    """No answer at all: the connection failed or timed out (the metrics tell it apart
    from an answer that carries no result)."""


def execute_policy(
    url: str, token: str | None, policy_rule_uri: str, input_data: Any, parameters: dict,
    *, timeout: float,
) -> tuple[int, dict]:
    """POST ``url`` (an ``.../execute_policy`` endpoint): (status, upstream envelope)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body = {"policy_rule_uri": policy_rule_uri, "input_data": input_data,
            "parameters": parameters}
    for attempt in range(CONNECT_RETRIES + 1):
        try:
            # Never follow a redirect: it could lead the request (and the token) anywhere.
            response = httpx.post(
                url, json=body, headers=headers, timeout=timeout, follow_redirects=False
            )
            break
        except httpx.ConnectError as exc:
            if attempt == CONNECT_RETRIES:
                raise RemoteUnreachable(f"cannot reach {url}: {exc}") from None
        except httpx.HTTPError as exc:
            raise RemoteUnreachable(f"{url} did not answer: {exc}") from None
    try:
        envelope = response.json()
    except ValueError:
        raise RemoteExecutionError(
            f"{url} answered {response.status_code} without JSON"
        ) from None
    if not isinstance(envelope, dict) or "success" not in envelope:
        raise RemoteExecutionError(f"{url} answered {response.status_code}: {envelope!r}"[:300])
    return response.status_code, envelope
