"""DMS job states as Kubernetes container states.

Times are sent as interLink decodes them (``metav1.Time``: an RFC 3339 string or null).
DMS's own times come in whatever form it has (``2026-11-30T10:00:00+01:00``,
``2026-11-30 10:00:00``, seconds since the epoch); they are normalised to RFC 3339 UTC
(``2026-11-30T09:00:00Z``), a time without a zone is taken as UTC, and anything that is not
a time becomes null: one odd value must not make interLink's status handler fail.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

WAITING = {"pending", "queued", "scheduled", "accepted", "created", "starting", "deploying"}
RUNNING = {"running", "started", "in_progress", "in progress"}
SUCCEEDED = {"finished", "completed", "complete", "success", "succeeded", "done"}
FAILED = {"failed", "failure", "error", "errored"}
STOPPED = {"cancelled", "canceled", "stopped", "killed", "terminated"}

EPOCH_MILLISECONDS = 10**11  # an epoch number above this is in milliseconds (after 1973)


def rfc3339(value: Any) -> str | None:
    """``value`` as an RFC 3339 UTC time to the second, or None if it is not a time."""
    if value is None or isinstance(value, bool) or value == "":
        return None
    moment: datetime | None = None
    number: float | None = None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            number = float(text)
        except ValueError:
            try:
                moment = datetime.fromisoformat(text.replace("z", "Z"))
            except ValueError:
                return None
    else:
        return None
    if number is not None:
        if not math.isfinite(number) or number <= 0:
            return None
        if number > EPOCH_MILLISECONDS:
            number /= 1000
        try:
            moment = datetime.fromtimestamp(number, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    assert moment is not None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    if not 1 <= moment.year <= 9999:
        return None
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def container_state(job: dict[str, Any]) -> dict[str, Any]:
    """``{"waiting"|"running"|"terminated": {...}}`` for a DMS job status answer."""
    status = str(job.get("jobstatus") or job.get("status") or "").strip().lower()
    started = rfc3339(job.get("starttime") or job.get("start_time") or None)
    if status in RUNNING:
        return {"running": {"startedAt": started}}
    if status in SUCCEEDED:
        return {"terminated": {"exitCode": _exit_code(job, 0),
                               "reason": "Completed", "startedAt": started}}
    if status in FAILED:
        return {"terminated": {"exitCode": _exit_code(job, 1), "reason": "Error",
                               "message": str(job.get("error") or "the NuNet job failed"),
                               "startedAt": started}}
    if status in STOPPED:
        return {"terminated": {"exitCode": _exit_code(job, 137),
                               "reason": "Cancelled", "startedAt": started}}
    if status in WAITING:
        return {"waiting": {"reason": "NuNetScheduling",
                            "message": f"DMS reports the job {status}"}}
    return {"waiting": {"reason": "NuNetUnknownState",
                        "message": f"DMS reports the job as {status or 'nothing'!r}"}}


def _exit_code(job: dict[str, Any], default: int) -> int:
    """An int32 exit code (interLink decodes it as one), else ``default``."""
    try:
        code = int(job.get("exit_code") or default)
    except (TypeError, ValueError):
        return default
    return code if -(2**31) <= code < 2**31 else default
