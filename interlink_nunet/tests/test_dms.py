"""The DMS client: retries where safe, never a job posted twice, errors that say what failed."""

from __future__ import annotations

import httpx
import pytest

from interlink_nunet.dms import DMSClient, DMSError


def client_with(handler, retries: int = 2) -> tuple[DMSClient, list]:
    calls: list = []

    def record(request: httpx.Request) -> httpx.Response:
        calls.append((request.method, request.url.path))
        return handler(request, len(calls))

    return DMSClient("http://dms:9999", "t", retries=retries, backoff_seconds=0.001,
                     transport=httpx.MockTransport(record)), calls


def test_connection_failures_are_retried_with_backoff() -> None:
    def flaky(request, n):
        if n < 3:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, json={"job_id": "j-1"})

    dms, calls = client_with(flaky)
    assert dms.post_job({"job": "busybox"}) == "j-1"
    assert len(calls) == 3


def test_a_post_that_timed_out_is_not_sent_again() -> None:
    def slow(request, n):
        raise httpx.ReadTimeout("slow", request=request)

    dms, calls = client_with(slow)
    with pytest.raises(DMSError, match="did not answer POST /orchestrator/postJob in time") as err:
        dms.post_job({"job": "busybox"})
    assert err.value.status == 504 and len(calls) == 1


def test_reads_are_retried_on_5xx_and_give_up_with_the_status() -> None:
    dms, calls = client_with(lambda request, n: httpx.Response(502, text="bad gateway"))
    with pytest.raises(DMSError, match="DMS answered 502 to GET /api/v1/job/status/j-1"):
        dms.job_status("j-1")
    assert len(calls) == 3


@pytest.mark.parametrize(("answer", "message"), [
    (httpx.Response(200, text="<html>"), "not JSON"),
    (httpx.Response(200, json={"ok": True}), "returned no job id"),
    (httpx.Response(400, text="job (the image) is required"),
     "DMS refused to post the job: 400 job \\(the image\\) is required"),
])
def test_bad_answers_to_a_post_are_errors(answer, message) -> None:
    dms, _ = client_with(lambda request, n: answer)
    with pytest.raises(DMSError, match=message):
        dms.post_job({"job": "x"})


@pytest.mark.parametrize("answer", [{"job_id": 7}, {"jobid": "7"}, {"id": "7"}, "7", 7])
def test_job_id_shapes(answer) -> None:
    dms, _ = client_with(lambda request, n: httpx.Response(200, json=answer))
    assert dms.post_job({"job": "x"}) == "7"


def test_the_token_is_sent_and_unknown_jobs_are_404() -> None:
    seen = {}

    def handler(request, n):
        seen["auth"] = request.headers.get("authorization")
        return httpx.Response(404, text="no such job")

    dms, _ = client_with(handler)
    with pytest.raises(DMSError) as err:
        dms.job_status("gone")
    assert err.value.status == 404 and seen["auth"] == "Bearer t"
    assert dms.cancel_job("gone") is False
