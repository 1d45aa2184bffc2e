"""A stub of the two Kubernetes reads of the kubernetes nodes source, for its unit test.

It answers GET /api/v1/nodes and GET /apis/metrics.k8s.io/v1beta1/nodes with the objects
given, as kubernetes.core's unit tests mock their client: the node conditions and the
metrics-server figures the test needs are set here, which a real control plane (whose
kwok nodes report Ready and which has no metrics-server) cannot show. The collection's
apply-mode tests run on a real control plane (tests/controlplane).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

LISTS = {"/api/v1/nodes": ("NodeList", "v1", "Node"),
         "/apis/metrics.k8s.io/v1beta1/nodes": ("NodeMetricsList", "metrics.k8s.io/v1beta1",
                                                "NodeMetrics")}


class KubeStub:
    def __init__(self, objects: list[dict]) -> None:
        self.objects = objects
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                if path not in LISTS:
                    self.send_error(404)
                    return
                kind, version, item_kind = LISTS[path]
                body = json.dumps({"kind": kind, "apiVersion": version, "metadata": {},
                                   "items": [o for o in stub.objects
                                             if o["kind"] == item_kind]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> KubeStub:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "stub",
            "clusters": [{"name": "stub", "cluster": {"server": self.url}}],
            "users": [{"name": "stub", "user": {"token": "stub-token"}}],
            "contexts": [{"name": "stub", "context": {"cluster": "stub", "user": "stub"}}],
        }))
        return path
