"""api_token against a real policy runtime: create, idempotence, check mode, rotate, revoke."""

from __future__ import annotations

import secrets
import time

import httpx
from conftest import run_collection_module
from render_site import REPO

MODULE = REPO / "plugins" / "modules" / "api_token.py"


def run_module(url: str, admin: str, check_mode: bool = False, **args: object) -> dict:
    return run_collection_module(MODULE, {"api_url": url, "api_token": admin, **args}, check_mode)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def status_becomes(url: str, token: str, expected: int) -> int:
    """The status of GET url with token, asked again while it differs (token lookups are
    cached for up to a second); the last status seen."""
    deadline = time.monotonic() + 10
    status = httpx.get(url, headers=bearer(token)).status_code
    while status != expected and time.monotonic() < deadline:
        time.sleep(0.2)
        status = httpx.get(url, headers=bearer(token)).status_code
    return status


def test_create_is_idempotent_by_name_and_the_token_is_scoped(runtime: tuple[str, str]) -> None:
    url, admin = runtime
    name = f"owner-{secrets.token_hex(4)}"
    cluster = f"cluster-{secrets.token_hex(4)}"
    args = {"name": name, "role": "cluster-owner", "clusters": [cluster]}

    created = run_module(url, admin, **args)
    assert created["changed"] is True, created
    token = created["token"]
    assert token not in str(created["record"])
    assert created["record"]["role"] == "cluster-owner"
    assert created["record"]["clusters"] == [cluster]
    # what the token may do is what its role and scope say
    assert httpx.get(f"{url}/clusters/{cluster}", headers=bearer(token)).status_code == 404
    assert httpx.get(f"{url}/clusters/another", headers=bearer(token)).status_code == 403
    assert httpx.get(f"{url}/tokens", headers=bearer(token)).status_code == 403

    again = run_module(url, admin, **args)
    assert again["changed"] is False and "token" not in again
    # the same token, not a new one: the first secret still works
    assert httpx.get(f"{url}/clusters/{cluster}", headers=bearer(token)).status_code == 404

    other_scope = run_module(url, admin, **{**args, "clusters": [cluster, "more"]})
    assert other_scope["failed"] is True
    assert "clusters" in other_scope["msg"] and "replace=true" in other_scope["msg"]
    record = httpx.get(f"{url}/tokens/{name}", headers=bearer(admin)).json()
    assert record["clusters"] == [cluster] and record["revoked"] is None


def test_check_mode_creates_and_revokes_nothing(runtime: tuple[str, str]) -> None:
    url, admin = runtime
    name = f"reader-{secrets.token_hex(4)}"
    preview = run_module(url, admin, check_mode=True, name=name, role="reader")
    assert preview["changed"] is True and "token" not in preview
    assert httpx.get(f"{url}/tokens/{name}", headers=bearer(admin)).status_code == 404

    token = run_module(url, admin, name=name, role="reader")["token"]
    rotate_preview = run_module(url, admin, check_mode=True, name=name, role="reader", rotate=True)
    assert rotate_preview["changed"] is True and "token" not in rotate_preview
    revoke_preview = run_module(url, admin, check_mode=True, name=name, state="absent")
    assert revoke_preview["changed"] is True
    assert httpx.get(f"{url}/tokens/{name}", headers=bearer(admin)).json()["revoked"] is None
    assert httpx.get(f"{url}/metrics", headers=bearer(token)).status_code == 200


def test_rotate_replace_and_revoke(runtime: tuple[str, str]) -> None:
    url, admin = runtime
    name = f"executor-{secrets.token_hex(4)}"
    first = run_module(url, admin, name=name, role="executor")["token"]
    probe = f"{url}/policies/aiosv1.policies.absent:v1/eval"
    assert httpx.post(probe, headers=bearer(first), json={"input_data": {}}).status_code == 404

    rotated = run_module(url, admin, name=name, role="executor", rotate=True)
    assert rotated["changed"] is True and rotated["token"] != first
    assert status_becomes(f"{url}/policies", first, 401) == 401
    second = rotated["token"]
    assert httpx.post(probe, headers=bearer(second), json={"input_data": {}}).status_code == 404

    replaced = run_module(url, admin, name=name, role="reader", replace=True)
    assert replaced["changed"] is True and replaced["record"]["role"] == "reader"
    assert status_becomes(f"{url}/policies", second, 401) == 401
    reader = replaced["token"]
    assert httpx.get(f"{url}/policies", headers=bearer(reader)).status_code == 200

    revoked = run_module(url, admin, name=name, state="absent")
    assert revoked["changed"] is True and revoked["record"]["revoked"]
    assert status_becomes(f"{url}/policies", reader, 401) == 401
    assert run_module(url, admin, name=name, state="absent")["changed"] is False
    # a revoked token's name may be given to a new token
    renewed = run_module(url, admin, name=name, role="reader")
    assert renewed["changed"] is True and renewed["token"] not in (first, second, reader)


def test_refusals_name_the_reason(runtime: tuple[str, str]) -> None:
    url, admin = runtime
    name = f"refused-{secrets.token_hex(4)}"
    wrong = run_module(url, "not-the-token", name=name, role="reader")
    assert wrong["failed"] is True and "401" in wrong["msg"]
    reader = run_module(url, admin, name=f"{name}-reader", role="reader")["token"]
    not_admin = run_module(url, reader, name=name, role="reader")
    assert not_admin["failed"] is True and "403" in not_admin["msg"]
    unscoped = run_module(url, admin, name=name, role="cluster-owner")
    assert unscoped["failed"] is True and "clusters" in unscoped["msg"]
    assert httpx.get(f"{url}/tokens/{name}", headers=bearer(admin)).status_code == 404
