"""A small in-memory Kubernetes API server for testing the roles in apply mode.

A real API server cannot run on CI machines. This one speaks enough of the API for
kubernetes.core's k8s and k8s_info modules and for helm: discovery, list/get, server-side
apply (PATCH application/apply-patch+yaml, with dryRun), merge and JSON patches, create,
update and delete; helm's release Secrets arrive as protobuf (see kube_protobuf.py).
It marks Deployments and StatefulSets ready and Jobs complete as soon as they are
applied, unless their name is in ``never_ready``. Objects keep their resourceVersion when
an apply changes nothing, so that idempotence is observable exactly as on a real cluster.
"""

from __future__ import annotations

import copy
import itertools
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml
from kube_protobuf import PROTOBUF, secret_from_protobuf

# (group/version, plural, kind, namespaced)
RESOURCES = [
    ("v1", "nodes", "Node", False),
    ("v1", "namespaces", "Namespace", False),
    ("v1", "services", "Service", True),
    ("v1", "configmaps", "ConfigMap", True),
    ("v1", "secrets", "Secret", True),
    ("v1", "persistentvolumeclaims", "PersistentVolumeClaim", True),
    ("v1", "persistentvolumes", "PersistentVolume", False),
    ("v1", "pods", "Pod", True),
    ("v1", "serviceaccounts", "ServiceAccount", True),
    ("rbac.authorization.k8s.io/v1", "clusterroles", "ClusterRole", False),
    ("rbac.authorization.k8s.io/v1", "clusterrolebindings", "ClusterRoleBinding", False),
    ("rbac.authorization.k8s.io/v1", "roles", "Role", True),
    ("rbac.authorization.k8s.io/v1", "rolebindings", "RoleBinding", True),
    ("apps/v1", "deployments", "Deployment", True),
    ("apps/v1", "statefulsets", "StatefulSet", True),
    ("apps/v1", "daemonsets", "DaemonSet", True),
    ("apps/v1", "replicasets", "ReplicaSet", True),
    ("batch/v1", "jobs", "Job", True),
    ("batch/v1", "cronjobs", "CronJob", True),
    ("storage.k8s.io/v1", "storageclasses", "StorageClass", False),
    ("metrics.k8s.io/v1beta1", "nodes", "NodeMetrics", False),
]
_BY_PLURAL = {(gv, plural): (kind, namespaced) for gv, plural, kind, namespaced in RESOURCES}
# helm validates manifests against the server's OpenAPI v2 document, which it reads as
# protobuf: this one (swagger "2.0", info "fake" "v1.31.4") declares no types, so it
# validates nothing (the render tests validate every manifest strictly instead).
_OPENAPI_V2 = b"\x0a\x032.0\x12\x0f\x0a\x04fake\x12\x07v1.31.4"
_SERVER_FIELDS = ("uid", "resourceVersion", "creationTimestamp", "generation", "managedFields")


def _resource_list(group_version: str) -> dict:
    return {
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
        "resources": [
            {"name": plural, "singularName": kind.lower(), "namespaced": namespaced, "kind": kind,
             "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update",
                       "watch"]}
            for gv, plural, kind, namespaced in RESOURCES if gv == group_version
        ],
    }


def _discovery() -> dict:
    groups = sorted({gv for gv, *_ in RESOURCES if "/" in gv})
    return {
        "/version": {"major": "1", "minor": "31", "gitVersion": "v1.31.4"},
        "/api": {"kind": "APIVersions", "versions": ["v1"],
                 "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "x"}]},
        "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
            {"name": gv.split("/")[0],
             "versions": [{"groupVersion": gv, "version": gv.split("/")[1]}],
             "preferredVersion": {"groupVersion": gv, "version": gv.split("/")[1]}}
            for gv in groups]},
        "/api/v1": _resource_list("v1"),
        **{f"/apis/{gv}": _resource_list(gv) for gv in groups},
    }


def _matches(obj: dict, selector: str | None) -> bool:
    if not selector:
        return True
    labels = obj["metadata"].get("labels") or {}
    for term in selector.split(","):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


def _with_defaults(obj: dict) -> dict:
    """Fields a real API server fills in that clients (kubernetes.core's waiters) read."""
    spec = obj.get("spec")
    if obj["kind"] == "StatefulSet" and isinstance(spec, dict):
        spec.setdefault("updateStrategy", {"type": "RollingUpdate",
                                           "rollingUpdate": {"partition": 0}})
    if obj["kind"] == "Deployment" and isinstance(spec, dict):
        strategy = spec.setdefault("strategy", {"type": "RollingUpdate"})
        if strategy.get("type") == "RollingUpdate":
            strategy.setdefault("rollingUpdate", {"maxUnavailable": "25%", "maxSurge": "25%"})
    return obj


def _merge(target: dict, patch: dict) -> dict:
    """JSON merge patch (RFC 7386)."""
    result = copy.deepcopy(target)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = _merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


class PatchConflict(Exception):
    """A JSON patch whose ``test`` operation failed or whose path does not exist."""


def _json_patch(target: dict, operations: list[dict]) -> dict:
    """JSON patch (RFC 6902): the add, replace, remove and test operations."""
    result = copy.deepcopy(target)
    for operation in operations:
        *parents, last = [p.replace("~1", "/").replace("~0", "~")
                          for p in operation["path"].lstrip("/").split("/")]
        node = result
        try:
            for part in parents:
                node = node[int(part)] if isinstance(node, list) else node[part]
            if operation["op"] == "test":
                current = node[int(last)] if isinstance(node, list) else node[last]
                if current != operation["value"]:
                    raise PatchConflict(f"test of {operation['path']} failed")
            elif operation["op"] == "remove":
                del node[int(last) if isinstance(node, list) else last]
            elif isinstance(node, list):
                index = len(node) if last == "-" else int(last)
                if operation["op"] == "add":
                    node.insert(index, copy.deepcopy(operation["value"]))
                else:
                    node[index] = copy.deepcopy(operation["value"])
            else:
                node[last] = copy.deepcopy(operation["value"])
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            raise PatchConflict(f"path {operation['path']} does not exist") from exc
    return result


class FakeKubernetes:
    """The object store and the HTTP server around it."""

    def __init__(self, never_ready: tuple[str, ...] = ()) -> None:
        self.objects: dict[tuple, dict] = {}
        self.never_ready = set(never_ready)
        self.requests: list[tuple[str, str]] = []
        self.json_patches: list[list[dict]] = []
        self._versions = itertools.count(1000)
        self._lock = threading.Lock()
        self._discovery = _discovery()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    # -- life cycle -------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeKubernetes:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": "fake-token"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
        }))
        return path

    # -- the store ----------------------------------------------------------------------
    def add(self, obj: dict) -> None:
        """Preload an object (nodes, DaemonSets, Services of the cluster)."""
        gv, kind = obj["apiVersion"], obj["kind"]
        plural = next(p for g, p, k, _ in RESOURCES if g == gv and k == kind)
        meta = obj["metadata"]
        self._store((gv, plural, meta.get("namespace"), meta["name"]), obj, dry_run=False)

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict | None:
        for (_, _, ns, obj_name), obj in self.objects.items():
            if obj["kind"] == kind and obj_name == name and ns == namespace:
                return obj
        return None

    def kinds(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for obj in self.objects.values():
            counts[obj["kind"]] = counts.get(obj["kind"], 0) + 1
        return counts

    def _status(self, obj: dict) -> dict:
        if obj["metadata"]["name"] in self.never_ready:
            return {"observedGeneration": obj["metadata"]["generation"], "replicas": 1}
        replicas = (obj.get("spec") or {}).get("replicas", 1)
        generation = obj["metadata"]["generation"]
        if obj["kind"] == "Deployment":
            return {"observedGeneration": generation, "replicas": replicas,
                    "readyReplicas": replicas, "availableReplicas": replicas,
                    "updatedReplicas": replicas,
                    "conditions": [{"type": "Available", "status": "True"},
                                   {"type": "Progressing", "status": "True",
                                    "reason": "NewReplicaSetAvailable"}]}
        if obj["kind"] == "StatefulSet":
            return {"observedGeneration": generation, "replicas": replicas,
                    "readyReplicas": replicas, "currentReplicas": replicas,
                    "updatedReplicas": replicas, "availableReplicas": replicas,
                    "currentRevision": "r1", "updateRevision": "r1"}
        if obj["kind"] == "Job":
            return {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
        return obj.get("status", {})

    def _store(self, key: tuple, desired: dict, *, dry_run: bool) -> tuple[dict, bool]:
        with self._lock:
            current = self.objects.get(key)
            content = {k: v for k, v in copy.deepcopy(desired).items() if k != "status"}
            content = _with_defaults(content)
            content["metadata"] = {k: v for k, v in desired["metadata"].items()
                                   if k not in _SERVER_FIELDS}
            if current is not None:
                before = {k: v for k, v in current.items() if k != "status"}
                before["metadata"] = {k: v for k, v in current["metadata"].items()
                                      if k not in _SERVER_FIELDS}
                if before == content:
                    return current, False
            obj = copy.deepcopy(content)
            meta = obj["metadata"]
            meta["uid"] = (current or {}).get("metadata", {}).get("uid") or f"uid-{key[3]}"
            meta["creationTimestamp"] = "2026-11-25T00:00:00Z"
            meta["generation"] = ((current or {}).get("metadata", {}).get("generation", 0)) + 1
            meta["resourceVersion"] = str(next(self._versions))
            obj["status"] = self._status(obj) if "status" not in desired else desired["status"]
            if not dry_run:
                self.objects[key] = obj
                if obj["kind"] == "Deployment":
                    self._replica_set_of(key, obj)
            return obj, True

    def _replica_set_of(self, key: tuple, deployment: dict) -> None:
        """The ReplicaSet a Deployment's controller would make (helm's --wait looks for it)."""
        meta, spec = deployment["metadata"], deployment.get("spec", {})
        replicas = spec.get("replicas", 1)
        self.objects[("apps/v1", "replicasets", key[2], f"{key[3]}-rs")] = {
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": f"{key[3]}-rs", "namespace": key[2],
                         "uid": f"uid-{key[3]}-rs", "resourceVersion": meta["resourceVersion"],
                         "generation": 1,
                         "labels": spec.get("template", {}).get("metadata", {}).get("labels", {}),
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                              "name": key[3], "uid": meta["uid"],
                                              "controller": True}]},
            "spec": {"replicas": replicas, "selector": spec.get("selector"),
                     "template": spec.get("template")},
            "status": {"replicas": replicas, "readyReplicas": replicas,
                       "availableReplicas": replicas, "observedGeneration": 1},
        }

    # -- HTTP -------------------------------------------------------------------------
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _not_found(self, what: str) -> None:
                self._send(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                 "reason": "NotFound", "code": 404, "message": f"{what} not found"})

            def _route(self) -> tuple | None:
                url = urllib.parse.urlparse(self.path)
                self.query = dict(urllib.parse.parse_qsl(url.query))
                parts = url.path.strip("/").split("/")
                if parts[0] == "api":
                    gv, rest = "v1", parts[2:]
                elif parts[0] == "apis" and len(parts) >= 3:
                    gv, rest = f"{parts[1]}/{parts[2]}", parts[3:]
                else:
                    return None
                namespace = None
                if len(rest) >= 3 and rest[0] == "namespaces":  # /namespaces/<ns>/<plural>...
                    namespace, rest = rest[1], rest[2:]
                if not rest or (gv, rest[0]) not in _BY_PLURAL:
                    return None
                return gv, rest[0], namespace, rest[1] if len(rest) > 1 else None

            def _body(self) -> dict:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b"{}"
                if self.headers.get("Content-Type", "").startswith(PROTOBUF):
                    return secret_from_protobuf(raw)  # helm's release records
                return yaml.safe_load(raw) or {}

            def do_GET(self) -> None:  # http.server's naming
                fake.requests.append(("GET", self.path))
                path = urllib.parse.urlparse(self.path).path.rstrip("/")
                if path == "/openapi/v2":
                    self.send_response(200)
                    self.send_header("Content-Type",
                                     "application/com.github.proto-openapi.spec.v2.v1.0+protobuf")
                    self.send_header("Content-Length", str(len(_OPENAPI_V2)))
                    self.end_headers()
                    return self.wfile.write(_OPENAPI_V2)
                if path in fake._discovery:
                    return self._send(200, fake._discovery[path])
                route = self._route()
                if route is None:
                    return self._not_found(path)
                gv, plural, namespace, name = route
                if name is None:
                    kind, _ = _BY_PLURAL[(gv, plural)]
                    items = [copy.deepcopy(o) for (g, p, ns, _), o in sorted(fake.objects.items(),
                             key=lambda kv: str(kv[0]))
                             if g == gv and p == plural and (namespace is None or ns == namespace)
                             and _matches(o, self.query.get("labelSelector"))]
                    return self._send(200, {"kind": f"{kind}List", "apiVersion": gv,
                                            "metadata": {"resourceVersion": "1"}, "items": items})
                obj = fake.objects.get((gv, plural, namespace, name))
                if obj is None:
                    return self._not_found(f"{plural} {name}")
                return self._send(200, obj)

            def do_PATCH(self) -> None:
                fake.requests.append(("PATCH", self.path))
                route = self._route()
                if route is None or route[3] is None:
                    return self._not_found(self.path)
                gv, plural, namespace, name = route
                body = self._body()
                key = (gv, plural, namespace, name)
                content_type = self.headers.get("Content-Type", "")
                dry_run = self.query.get("dryRun") == "All"
                current = fake.objects.get(key)
                if "apply-patch" in content_type:
                    desired = body
                elif current is None:
                    return self._not_found(f"{plural} {name}")
                elif "json-patch" in content_type:
                    fake.json_patches.append(body)
                    try:
                        desired = _json_patch(current, body)
                    except PatchConflict as exc:
                        return self._send(422, {"kind": "Status", "status": "Failure",
                                                "reason": "Invalid", "code": 422,
                                                "message": str(exc)})
                else:
                    desired = _merge(current, body)
                obj, _ = fake._store(key, desired, dry_run=dry_run)
                return self._send(200, obj)

            def do_POST(self) -> None:
                fake.requests.append(("POST", self.path))
                route = self._route()
                if route is None:
                    return self._not_found(self.path)
                gv, plural, namespace, _ = route
                body = self._body()
                key = (gv, plural, namespace, body["metadata"]["name"])
                if key in fake.objects:
                    return self._send(409, {"kind": "Status", "reason": "AlreadyExists",
                                            "code": 409, "status": "Failure"})
                obj, _ = fake._store(key, body, dry_run=self.query.get("dryRun") == "All")
                return self._send(201, obj)

            def do_PUT(self) -> None:
                fake.requests.append(("PUT", self.path))
                route = self._route()
                if route is None or route[3] is None or route not in fake.objects:
                    return self._not_found(self.path)
                obj, _ = fake._store(route, self._body(), dry_run=False)
                return self._send(200, obj)

            def do_DELETE(self) -> None:
                fake.requests.append(("DELETE", self.path))
                route = self._route()
                if route is None or route[3] is None:
                    return self._not_found(self.path)
                obj = fake.objects.pop(route, None)
                if obj is None:
                    return self._not_found(self.path)
                return self._send(200, {"kind": "Status", "apiVersion": "v1",
                                        "status": "Success", "details": {"name": route[3]}})

        return Handler
