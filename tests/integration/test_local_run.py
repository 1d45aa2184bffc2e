"""`make run` end to end: start, publish and evaluate the samples, reuse, stop."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "run_local.py"


def run_local(directory: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--dir", str(directory), *extra],
        capture_output=True, text=True, timeout=300, check=False,
    )


def test_make_run_publishes_and_evaluates_every_sample(tmp_path: Path) -> None:
    cases = sorted(REPO.glob("policies/examples/*/cases/*.json"))
    policies = sorted(REPO.glob("policies/examples/*/policy.py"))
    try:
        first = run_local(tmp_path)
        assert first.returncode == 0, first.stdout + first.stderr
        assert f"{len(policies)} policies published, {len(cases)} decisions as expected, 0 not" in (
            first.stdout
        )
        assert first.stdout.count("  PASS  ") == len(cases)
        assert (tmp_path / "api-token").stat().st_mode & 0o777 == 0o600

        state = json.loads((tmp_path / "runtime.json").read_text())
        assert httpx.get(f"{state['url']}/policies").status_code == 401
        token = (tmp_path / "api-token").read_text().strip()
        listing = httpx.get(
            f"{state['url']}/policies", headers={"Authorization": f"Bearer {token}"}
        ).json()
        assert listing["total"] == len(policies)

        second = run_local(tmp_path)
        assert second.returncode == 0
        assert f"runtime already running at {state['url']}" in second.stdout
        assert "(already published)" in second.stdout
    finally:
        stopped = run_local(tmp_path, "--stop")
    assert "stopped the runtime" in stopped.stdout
    assert "not running" in run_local(tmp_path, "--stop").stdout
