"""Client of the service-provider DMS: post a job, read its status and logs, list peers.

NuNet's own interLink design names three endpoints (``POST /orchestrator/postJob``,
``GET /api/v1/job/status/{id}``, ``GET /api/v1/peers/dht/dump``); the paths for logs and
cancelling are settings because it names none. Connection failures are retried
with exponential backoff; a request that reached DMS is retried only if it is a read,
so a job is never posted twice. Every failure becomes a DMSError with a message an
operator can act on.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import httpx

log = logging.getLogger(__name__)

POST_JOB = "/orchestrator/postJob"
JOB_STATUS = "/api/v1/job/status/{job_id}"
PEERS_DUMP = "/api/v1/peers/dht/dump"


class DMSError(Exception):
    """DMS did not do what was asked. ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 502) -> None:
        super().__init__(message)
        self.status = status


class DMSClient:
    def __init__(self, base_url: str, token: str | None = None, timeout: float = 10.0,
                 retries: int = 3, backoff_seconds: float = 0.2,
                 logs_path: str = "/api/v1/job/logs/{job_id}",
                 cancel_path: str = "/api/v1/job/cancel/{job_id}",
                 transport: httpx.BaseTransport | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout,
                                 transport=transport)
        self.retries = retries
        self.backoff_seconds = backoff_seconds
        self.logs_path = logs_path
        self.cancel_path = cancel_path

    def close(self) -> None:
        self.http.close()

    def _request(self, method: str, path: str, *, read: bool, **kwargs: Any) -> httpx.Response:
        for attempt in range(self.retries + 1):
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.ConnectError as exc:  # nothing reached DMS: always safe to retry
                failure: str = f"cannot connect to DMS at {self.base_url}: {exc}"
            except httpx.TimeoutException:
                failure = f"DMS at {self.base_url} did not answer {method} {path} in time"
                if not read:  # it may have acted on it: never post a job twice
                    raise DMSError(failure + "; check the job list before retrying",
                                   504) from None
            except httpx.HTTPError as exc:
                failure = f"DMS request {method} {path} failed: {exc}"
            else:
                if response.status_code < 500 or not read:
                    return response
                failure = f"DMS answered {response.status_code} to {method} {path}"
            if attempt < self.retries:
                pause = self.backoff_seconds * 2**attempt
                log.warning("%s; retrying in %.1f s", failure, pause)
                time.sleep(pause)
        raise DMSError(failure, 503 if "connect" in failure else 502)

    @staticmethod
    def _json(response: httpx.Response, what: str) -> Any:
        if response.status_code >= 400:
            detail = response.text.strip()[:300] or response.reason_phrase
            raise DMSError(f"DMS refused to {what}: {response.status_code} {detail}",
                           404 if response.status_code == 404 else 502)
        try:
            return response.json()
        except ValueError:
            raise DMSError(f"DMS answered {what} with something that is not JSON: "
                           f"{response.text[:200]!r}") from None

    def post_job(self, job: dict) -> str:
        answer = self._json(self._request("POST", POST_JOB, read=False, json=job), "post the job")
        job_id = answer
        if isinstance(answer, dict):
            job_id = next((answer[k] for k in ("job_id", "jobid", "jobID", "id") if k in answer),
                          None)
        if job_id in (None, "") or isinstance(job_id, dict | list):
            raise DMSError(f"DMS accepted the job but returned no job id: {answer!r}")
        return str(job_id)

    def job_status(self, job_id: str) -> dict:
        path = JOB_STATUS.format(job_id=job_id)
        answer = self._json(self._request("GET", path, read=True), f"report job {job_id}")
        if not isinstance(answer, dict):
            raise DMSError(f"DMS reported job {job_id} as {answer!r}, not an object")
        return answer

    def job_logs(self, job_id: str) -> str:
        response = self._request("GET", self.logs_path.format(job_id=job_id), read=True)
        if response.status_code >= 400:
            self._json(response, f"return the logs of job {job_id}")
        return response.text

    def cancel_job(self, job_id: str) -> bool:
        """True if DMS stopped the job, False if it does not know it (any more)."""
        response = self._request("POST", self.cancel_path.format(job_id=job_id), read=False)
        if response.status_code == 404:
            return False
        if response.status_code >= 400:
            self._json(response, f"cancel job {job_id}")
        return True

    def peers(self) -> list[dict]:
        answer = self._json(self._request("GET", PEERS_DUMP, read=True), "list its peers")
        if not isinstance(answer, list):
            raise DMSError(f"DMS's peers dump is not a list: {str(answer)[:200]}")
        return answer
