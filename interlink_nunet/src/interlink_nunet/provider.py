"""The interLink provider: create, delete, status and logs of pods as NuNet jobs.

What interLink sends, in the forms this accepts:
- ``/create``: one ``{"pod": <Pod>, "container": [{"configMaps": [...], ...}]}`` (interLink
  0.5 and later), a list of those (earlier releases), or a list of plain pods (the seed);
  the answer is ``{"PodUID", "PodJID"}`` for one, a list of them for a list.
- ``/delete``: the pod. ``/status``: a list of pods; an empty list is interLink's ping and is
  answered with the node's resources. ``/getLogs``: ``{"Namespace", "PodUID", "PodName",
  "ContainerName", "Opts": {"Tail", "Bytes", ...}}``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from interlink_nunet.config import Settings
from interlink_nunet.dms import DMSClient, DMSError
from interlink_nunet.jobs import PodRejected, build_job, pod_identity
from interlink_nunet.metrics import PluginMetrics
from interlink_nunet.resources import Consolidated, consolidate
from interlink_nunet.status import container_state
from interlink_nunet.store import JobStore

log = logging.getLogger(__name__)


def _creation_requests(body: Any) -> tuple[list[tuple[dict, list[dict]]], bool]:
    """``[(pod, config maps)]`` and whether the body was a single request."""
    single = isinstance(body, dict)
    items = [body] if single else body
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise PodRejected("the body must be a pod creation request, or a list of them or of pods")
    requests = []
    for item in items:
        if "pod" in item:  # interLink's RetrievedPodData / PodCreateRequests
            config_maps = list(item.get("configmaps") or [])
            for container in item.get("container") or []:
                config_maps += container.get("configMaps") or []
            requests.append((item["pod"], config_maps))
        else:  # a plain pod (the seed)
            requests.append((item, []))
    return requests, single


class NuNetProvider:
    def __init__(self, settings: Settings, dms: DMSClient, store: JobStore,
                 metrics: PluginMetrics) -> None:
        self.settings = settings
        self.dms = dms
        self.store = store
        self.metrics = metrics
        self._peers: tuple[float, Consolidated] | None = None
        self._peers_lock = threading.Lock()

    # -- resources ------------------------------------------------------------------------
    def consolidated(self) -> Consolidated:
        """The peers, consolidated; a dump is reused for ``peers_cache_seconds``."""
        with self._peers_lock:
            now = time.monotonic()
            if self._peers and now - self._peers[0] < self.settings.peers_cache_seconds:
                return self._peers[1]
            with self.metrics.dms_call("peers"):
                peers = self.dms.peers()
            result = consolidate(peers, gpu_only=self.settings.gpu_only)
            self._peers = (now, result)
            self.metrics.observe_resources(result.allocatable.table())
            return result

    def _gpu_models(self) -> dict:
        try:
            return self.consolidated().models
        except DMSError:  # translation still works from the resource name alone
            return self._peers[1].models if self._peers else {}

    def ping(self) -> dict[str, Any]:
        prefix, pods = self.settings.resource_prefix, self.settings.pods
        return {"status": "ok", "resources": self.consolidated().ping_resources(prefix, pods)}

    def node_status(self) -> dict[str, dict[str, str]]:
        return self.consolidated().node_status(self.settings.resource_prefix, self.settings.pods)

    # -- pods -------------------------------------------------------------------------------
    def create(self, body: Any) -> dict | list[dict]:
        requests, single = _creation_requests(body)
        models = self._gpu_models()
        # Translate every pod before posting any: a bad pod in a batch posts nothing.
        jobs = []
        for pod, config_maps in requests:
            uid, name, namespace = pod_identity(pod)
            known = self.store.get(uid)
            job = None if known else build_job(pod, config_maps, self.settings.resource_prefix,
                                                models)
            jobs.append((uid, name, namespace, job, known))
        created = []
        for uid, name, namespace, job, known in jobs:
            if known is not None:  # created before: interLink retried, answer the same job
                created.append({"PodUID": uid, "PodJID": known.job_id})
                continue
            with self.metrics.dms_call("post_job"):
                job_id = self.dms.post_job(job)
            self.store.put(uid, namespace, name, job_id)
            self.metrics.jobs_created.inc()
            log.info("pod %s/%s is NuNet job %s", namespace, name, job_id,
                     extra={"pod_uid": uid, "job_id": job_id})
            created.append({"PodUID": uid, "PodJID": job_id})
        return created[0] if single else created

    def delete(self, pod: Any) -> str:
        if not isinstance(pod, dict):
            raise PodRejected("the body must be the pod to delete")
        uid, name, namespace = pod_identity(pod)
        mapping = self.store.get(uid)
        if mapping is None:
            return f"Pod '{uid}' is not known to the NuNet plugin; nothing to delete"
        with self.metrics.dms_call("cancel_job"):
            known = self.dms.cancel_job(mapping.job_id)
        self.store.remove(uid)  # only once DMS has let go of the job
        self.metrics.jobs_deleted.inc()
        log.info("pod %s/%s deleted, job %s %s", namespace, name, mapping.job_id,
                 "cancelled" if known else "was already gone")
        return f"Pod '{uid}' deleted"

    def status(self, pods: Any) -> list[dict] | dict:
        if not isinstance(pods, list):
            raise PodRejected("the body must be a list of pods ([] to ping)")
        if not pods:
            return self.ping()
        return [self._pod_status(pod) for pod in pods]

    def _pod_status(self, pod: dict) -> dict:
        uid, name, namespace = pod_identity(pod)
        containers = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
        mapping = self.store.get(uid)
        if mapping is None:
            state = {"terminated": {"exitCode": 1, "reason": "NotFound",
                                    "message": "the NuNet plugin has no job for this pod"}}
            job_id = ""
        else:
            with self.metrics.dms_call("job_status"):
                state = container_state(self.dms.job_status(mapping.job_id))
            job_id = mapping.job_id
        return {
            "name": name, "UID": uid, "namespace": namespace, "JID": job_id,
            "containers": [{"name": c, "state": state, "ready": "running" in state,
                            "restartCount": 0, "image": "", "imageID": ""}
                           for c in containers],
            "initContainers": [],
        }

    def logs(self, request: Any) -> str:
        if not isinstance(request, dict) or not request.get("PodUID"):
            raise PodRejected("the body must be interLink's log request with PodUID")
        mapping = self.store.get(request["PodUID"])
        if mapping is None:
            raise DMSError(f"the NuNet plugin has no job for pod {request['PodUID']}", 404)
        with self.metrics.dms_call("job_logs"):
            text = self.dms.job_logs(mapping.job_id)
        return trim_logs(text, request.get("Opts") or {})


def trim_logs(text: str, opts: dict) -> str:
    """Apply ``Tail`` (last lines) and ``Bytes``/``LimitBytes`` (last bytes) of the request."""
    tail = int(opts.get("Tail") or 0)
    if tail > 0:
        lines = text.splitlines(keepends=True)
        text = "".join(lines[-tail:])
    limit = int(opts.get("Bytes") or opts.get("LimitBytes") or 0)
    if limit > 0:
        text = text.encode()[-limit:].decode(errors="ignore")
    return text
