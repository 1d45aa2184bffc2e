"""GET /executors/{id}: one registered executor, as a reader sees it, against a real runtime
process and database: its id and URL, never the token it was issued nor that token's name."""

from __future__ import annotations

import secrets

from conftest import RuntimeServer


def test_one_executor_is_shown_without_its_token(server: RuntimeServer) -> None:
    executor_id = f"lookup-{secrets.token_hex(4)}"
    with server.client() as admin:
        created = admin.post(
            "/executors", json={"id": executor_id, "url": "http://127.0.0.1:30900/"}
        )
        assert created.status_code == 201, created.text
        issued = created.json()["token"]
        reader = admin.post(
            "/tokens", json={"name": f"reader-{executor_id}", "role": "reader"}
        )
        assert reader.status_code == 201, reader.text
        try:
            with server.client(reader.json()["token"]) as client:
                shown = client.get(f"/executors/{executor_id}")
                assert shown.status_code == 200, shown.text
                assert shown.json() == {"id": executor_id, "url": "http://127.0.0.1:30900"}
                assert issued not in shown.text and "token" not in shown.text

                missing = client.get(f"/executors/{executor_id}-gone")
                assert missing.status_code == 404
                assert f"{executor_id}-gone" in missing.text

            # Once unregistered it is gone for readers too.
            assert admin.delete(f"/executors/{executor_id}").status_code == 204
            assert admin.get(f"/executors/{executor_id}").status_code == 404
        finally:
            admin.delete(f"/executors/{executor_id}")
            admin.delete(f"/tokens/reader-{executor_id}")
