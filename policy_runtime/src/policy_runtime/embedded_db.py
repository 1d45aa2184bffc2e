"""The embedded MongoDB-wire-protocol server (SecantusDB) as a child process.

For laptops and CI only: ``aios-policy serve --embedded-db DIR`` and the test suite run
it as its own process with its data in DIR, so pymongo talks to it exactly as to MongoDB.
Run directly (``python -m policy_runtime.embedded_db --dir DIR``) it serves until
stopped and prints one line ``listening <port>`` once it accepts connections.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

_START_TIMEOUT_SECONDS = 60.0
# How often the server checks whether whoever started it is gone. Nothing else runs on a
# timer: every write the runtime sends asks for the journal (j: true), and the server
# acknowledges it only once its journal is on disk, so a kill -9 loses nothing
# acknowledged, in new collections as in old ones (no periodic checkpoint is needed; the
# reliability suite kills the runtime and the database together to check it).
_ORPHAN_CHECK_SECONDS = 1.0


class EmbeddedDatabase:
    """Start and stop the embedded server in a child process."""

    def __init__(self, data_dir: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self.data_dir = Path(data_dir)
        self.host = host
        self.port = port
        self._proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://{self.host}:{self.port}/?directConnection=true"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> EmbeddedDatabase:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._proc = subprocess.Popen(
            [
                sys.executable, "-m", "policy_runtime.embedded_db",
                "--dir", str(self.data_dir), "--host", self.host, "--port", str(self.port),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self._await_line()
        if not line.startswith("listening "):
            self.stop()
            raise RuntimeError(
                f"the embedded database did not start (data dir {self.data_dir}); "
                "see its messages above"
            )
        self.port = int(line.split()[1])
        return self

    def _await_line(self) -> str:
        assert self._proc is not None and self._proc.stdout is not None
        result: list[str] = []
        reader = threading.Thread(target=lambda: result.append(self._proc.stdout.readline()))
        reader.daemon = True
        reader.start()
        reader.join(_START_TIMEOUT_SECONDS)
        return result[0].strip() if result else ""

    def stop(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def __enter__(self) -> EmbeddedDatabase:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _stop_queries_on_time() -> None:
    """Check a query's time limit (maxTimeMS) at every document, not every 64th.

    SecantusDB reads the clock once per 64 documents scanned. A filter that costs
    milliseconds a document (a backtracking ``$regex`` over long values) then runs on
    for 64 documents past its limit, and holds the server while the runtime has already
    answered 504; one clock read a document costs nothing beside such a match.
    """
    from secantus import deadline

    deadline.POLL_EVERY = 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", required=True, help="data directory")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args(argv)
    try:
        from secantus import SecantusDBServer
    except ImportError:
        print(
            "the embedded database needs SecantusDB: pip install 'aios-policy-runtime[embedded]'",
            file=sys.stderr,
        )
        return 2
    _stop_queries_on_time()

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server = SecantusDBServer(
        host=args.host,
        port=args.port,
        storage_path=str(Path(args.dir).resolve()),
        enable_test_commands=False,
        durable=True,
        # A standalone server, no replica set: the runtime needs neither change streams nor
        # transactions, and the replica set's oplog makes every write slower as it grows
        # (0.7 ms per update at first, 5 ms after 11,000, pruned or not; 0.4 ms flat without).
        replica_set_name=None,
    )
    server.start()
    print(f"listening {server.port}", flush=True)
    try:
        while not stop.wait(_ORPHAN_CHECK_SECONDS):
            if os.getppid() == 1:  # orphaned: whoever started us is gone
                break
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
