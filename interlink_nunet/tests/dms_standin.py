"""A stand-in for the service-provider DMS, replaying the seed's shapes (DMS cannot run here).

``POST /orchestrator/postJob`` keeps the payload and answers a job id;
``GET /api/v1/job/status/{id}`` answers ``{jobid, jobstatus, starttime, duration,
remainingtime}``; ``GET /api/v1/peers/dht/dump`` the peers file; logs and cancel at the
plugin's default paths. ``/_control/...`` lets a test read the posted jobs and move a job
to another state or lose it (``DELETE``); ``/_control/starttime/{id}`` gives it an odd
start time; ``/_control/faults`` makes it slow to accept a job (``post_delay`` seconds)
or fail its peers dump (``peers_fail``) or answer other peers (``peers``), and
``/_control/logs/{id}`` sets a job's log text. State is kept in a file, so a restarted
stand-in remembers its jobs.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import uvicorn
from fastapi import Body, FastAPI, HTTPException
from fastapi.responses import PlainTextResponse


def build(state_file: Path, peers_file: Path) -> FastAPI:
    app = FastAPI()
    state = json.loads(state_file.read_text()) if state_file.exists() else {"jobs": {}}
    faults: dict = {"post_delay": 0, "peers_fail": False}

    def save() -> None:
        state_file.write_text(json.dumps(state))

    def job(job_id: str) -> dict:
        if job_id not in state["jobs"]:
            raise HTTPException(404, f"job {job_id} not found")
        return state["jobs"][job_id]

    @app.get("/healthz")
    def healthz() -> dict:
        return {"ok": True}

    @app.post("/orchestrator/postJob")
    def post_job(payload: Annotated[dict, Body()]) -> dict:
        time.sleep(float(faults["post_delay"]))
        if not payload.get("job"):
            raise HTTPException(400, "job (the image) is required")
        job_id = f"job-{uuid.uuid4().hex[:12]}"
        state["jobs"][job_id] = {"payload": payload, "status": "pending",
                                 "start": datetime.now(UTC).isoformat(), "cancelled": False}
        save()
        return {"job_id": job_id}

    @app.get("/api/v1/job/status/{job_id}")
    def status(job_id: str) -> dict:
        entry = job(job_id)
        return {"jobid": job_id, "jobstatus": entry["status"], "starttime": entry["start"],
                "duration": 5, "remainingtime": 595}

    @app.get("/api/v1/job/logs/{job_id}", response_class=PlainTextResponse)
    def logs(job_id: str) -> str:
        entry = job(job_id)
        if "logs" in entry:
            return entry["logs"]
        return "".join(f"line {i} of {entry['payload']['job']}\n" for i in range(1, 6))

    @app.post("/api/v1/job/cancel/{job_id}")
    def cancel(job_id: str) -> dict:
        job(job_id)["cancelled"] = True
        job(job_id)["status"] = "cancelled"
        save()
        return {"cancelled": job_id}

    @app.get("/api/v1/peers/dht/dump")
    def peers() -> list:
        if faults["peers_fail"]:
            raise HTTPException(500, "peers dump failed")
        if faults.get("peers") is not None:
            return faults["peers"]
        return json.loads(peers_file.read_text())

    @app.get("/_control/jobs")
    def jobs() -> dict:
        return state["jobs"]

    @app.post("/_control/jobs/{job_id}/{status}")
    def move(job_id: str, status: str) -> dict:
        job(job_id)["status"] = status
        save()
        return {"jobid": job_id, "jobstatus": status}

    @app.delete("/_control/jobs/{job_id}")
    def lose(job_id: str) -> dict:
        job(job_id)
        del state["jobs"][job_id]
        save()
        return {"lost": job_id}

    @app.post("/_control/starttime/{job_id}")
    def start_time(job_id: str, starttime: Annotated[object, Body(embed=True)]) -> dict:
        job(job_id)["start"] = starttime
        save()
        return {"jobid": job_id, "starttime": starttime}

    @app.post("/_control/logs/{job_id}")
    def set_logs(job_id: str, text: Annotated[str, Body(embed=True)]) -> dict:
        job(job_id)["logs"] = text
        save()
        return {"jobid": job_id}

    @app.post("/_control/faults")
    def set_faults(changes: Annotated[dict, Body()]) -> dict:
        faults.update(changes)
        return faults

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--peers", type=Path, required=True)
    args = parser.parse_args()
    uvicorn.run(build(args.state, args.peers), host="127.0.0.1", port=args.port,
                log_level="warning")


if __name__ == "__main__":
    main()
