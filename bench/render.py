"""Wall time of rendering the whole playbooks/site.yml, and how many manifests it writes.

Target: <= 30 s on the development machine. Runs the real ansible-playbook in render
mode (no cluster) three times into fresh directories and prints each run and the best.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from render_site import manifests, render_site

RUNS = 3


def main() -> int:
    timings = []
    count = 0
    for run in range(1, RUNS + 1):
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            done = render_site(Path(tmp))
            elapsed = time.perf_counter() - started
            if done.returncode != 0:
                print(done.stdout[-2000:], done.stderr[-2000:])
                return 1
            count = len(manifests(Path(tmp)))
        timings.append(elapsed)
        print(f"run {run}: {elapsed:6.2f} s, {count} manifests", flush=True)
    best = min(timings)
    verdict = "meets target" if best <= 30 else "MISSES target"
    print(f"\nrender of site.yml: best {best:.2f} s of {RUNS} runs, {count} manifests   "
          f"target <= 30 s   {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
