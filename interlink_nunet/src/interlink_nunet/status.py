"""DMS job states as Kubernetes container states."""

from __future__ import annotations

from typing import Any

WAITING = {"pending", "queued", "scheduled", "accepted", "created", "starting", "deploying"}
RUNNING = {"running", "started", "in_progress", "in progress"}
SUCCEEDED = {"finished", "completed", "complete", "success", "succeeded", "done"}
FAILED = {"failed", "failure", "error", "errored"}
STOPPED = {"cancelled", "canceled", "stopped", "killed", "terminated"}


def container_state(job: dict[str, Any]) -> dict[str, Any]:
    """``{"waiting"|"running"|"terminated": {...}}`` for a DMS job status answer."""
    status = str(job.get("jobstatus") or job.get("status") or "").strip().lower()
    started = job.get("starttime") or job.get("start_time") or None
    if status in RUNNING:
        return {"running": {"startedAt": started}}
    if status in SUCCEEDED:
        return {"terminated": {"exitCode": int(job.get("exit_code") or 0),
                               "reason": "Completed", "startedAt": started}}
    if status in FAILED:
        return {"terminated": {"exitCode": int(job.get("exit_code") or 1), "reason": "Error",
                               "message": str(job.get("error") or "the NuNet job failed"),
                               "startedAt": started}}
    if status in STOPPED:
        return {"terminated": {"exitCode": int(job.get("exit_code") or 137),
                               "reason": "Cancelled", "startedAt": started}}
    if status in WAITING:
        return {"waiting": {"reason": "NuNetScheduling",
                            "message": f"DMS reports the job {status}"}}
    return {"waiting": {"reason": "NuNetUnknownState",
                        "message": f"DMS reports the job as {status or 'nothing'!r}"}}
