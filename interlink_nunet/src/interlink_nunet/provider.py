"""The interLink provider: create, delete, status and logs of pods as NuNet jobs.

What interLink sends, in the forms this accepts:
- ``/create``: one ``{"pod": <Pod>, "container": [{"configMaps": [...], ...}]}`` (interLink
  0.5 and later), a list of those (earlier releases), or a list of plain pods (the first
  plugin protocol); the answer is ``{"PodUID", "PodJID"}`` for one, a list of them for a list.
- ``/delete``: the pod. ``/status``: a list of pods; an empty list is interLink's ping and is
  answered with the node's resources. ``/getLogs``: ``{"Namespace", "PodUID", "PodName",
  "ContainerName", "Opts": {"Tail", "Bytes", ...}}``.

How interLink 0.6.2 sequences these calls shapes the answers: the virtual kubelet polls a
Pending pod's status while its create still runs, and gives up on a pod it once reads as
failed (so a pod without a job reads "being created"); it sends a delete once and only
logs a failure (so a cancel DMS did not confirm is kept and retried); one status answer
covers every pod of the node (so one lost job is reported for its pod alone); and a ping
that is not a 200 makes the node NotReady (so a failed peers dump answers the last
resources, with a taint while they are stale).
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta
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
        else:  # a plain pod (the first plugin protocol)
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
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._retrier: threading.Thread | None = None
        metrics.pending_cancels.set_function(store.pending_cancel_count)
        metrics.resources_age.set_function(self.resources_age)

    # -- background work ----------------------------------------------------------------
    def start(self) -> None:
        """Start retrying the cancels DMS has not confirmed (including those of a previous
        run, which the store kept)."""
        if self._retrier is None:
            self._retrier = threading.Thread(target=self._retry_cancels, name="cancel-retrier",
                                             daemon=True)
            self._retrier.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._retrier is not None:
            self._retrier.join(10)

    def _retry_cancels(self) -> None:
        while not self._stop.is_set():
            for pending in self.store.pending_cancels():
                if self._stop.is_set():
                    return
                self._cancel(pending.job_id, pending.namespace, pending.pod_name)
            self._wake.wait(self.settings.cancel_retry_seconds)
            self._wake.clear()

    def _cancel(self, job_id: str, namespace: str, name: str) -> bool:
        """Ask DMS to cancel ``job_id``; True once DMS has let go of it (cancelled, or does
        not know it), and the pending cancel is then forgotten."""
        try:
            with self.metrics.dms_call("cancel_job"):
                known = self.dms.cancel_job(job_id)
        except DMSError as exc:
            self.store.cancel_failed(job_id, str(exc))
            log.warning("cancelling job %s of pod %s/%s failed, will retry: %s", job_id,
                        namespace, name, exc, extra={"job_id": job_id})
            return False
        self.store.cancel_done(job_id)
        self.metrics.jobs_deleted.inc()
        log.info("job %s of pod %s/%s %s", job_id, namespace, name,
                 "cancelled" if known else "was already gone", extra={"job_id": job_id})
        return True

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
            self.metrics.observe_resources(result.capacity.table(), result.allocatable.table())
            return result

    def resources_age(self) -> float:
        """Seconds since the last peers dump that DMS answered; -1 before the first."""
        peers = self._peers
        return time.monotonic() - peers[0] if peers else -1.0

    def _gpu_models(self) -> dict:
        try:
            return self.consolidated().models
        except DMSError:  # translation still works from the resource name alone
            return self._peers[1].models if self._peers else {}

    def ping(self) -> dict[str, Any]:
        """interLink's ping answer. When DMS's peers dump fails, the last resources it gave
        are answered (the node stays Ready, its pods are not evicted) with a NoSchedule
        taint while they are stale; before any dump succeeded the failure is answered."""
        prefix, pods = self.settings.resource_prefix, self.settings.pods
        taints = [t.model_dump() for t in self.settings.node_taints]
        try:
            consolidated = self.consolidated()
        except DMSError as exc:
            if self._peers is None:
                raise
            consolidated = self._peers[1]
            log.warning("DMS's peers dump failed; answering the ping with resources %.0f s "
                        "old: %s", self.resources_age(), exc)
            if self.settings.stale_taint:
                taints.append({"key": self.settings.stale_taint, "value": "true",
                               "effect": "NoSchedule"})
        resources = consolidated.ping_resources(prefix, pods)
        # interLink only sets the resources a ping names: a GPU kind no peer offers any more
        # would keep its old count, so every name advertised before is sent, at 0 if gone
        current = {a["resourceType"] for a in resources["accelerators"]}
        resources["accelerators"] += [{"resourceType": name, "available": "0"}
                                      for name in sorted(self.store.advertised() - current)]
        self.store.remember_advertised(current)
        answer = {"status": "ok", "resources": resources}
        if self.settings.send_taints:
            answer["taints"] = taints
        return answer

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
            if known is None and self.store.begin_create(uid, namespace, name):
                # recorded "creating" first: a status check while DMS takes its time reads
                # "being created", not "unknown"
                try:
                    with self.metrics.dms_call("post_job"):
                        job_id = self.dms.post_job(job)
                except BaseException:
                    self.store.abandon_create(uid)
                    raise
                if not self.store.finish_create(uid, job_id):
                    log.info("pod %s/%s was deleted while its job %s was being posted; "
                             "cancelling it", namespace, name, job_id)
                    self._cancel(job_id, namespace, name)
                self.metrics.jobs_created.inc()
                log.info("pod %s/%s is NuNet job %s", namespace, name, job_id,
                         extra={"pod_uid": uid, "job_id": job_id})
                created.append({"PodUID": uid, "PodJID": job_id})
                continue
            known = self.store.get(uid)  # created before: interLink retried, the same job
            created.append({"PodUID": uid, "PodJID": known.job_id if known else ""})
        return created[0] if single else created

    def delete(self, pod: Any) -> str:
        """interLink sends a delete once and only logs a failure, so the delete is recorded
        durably first and answered 200; DMS is asked now and, if it cannot be reached,
        again in the background until it confirms."""
        if not isinstance(pod, dict):
            raise PodRejected("the body must be the pod to delete")
        uid, name, namespace = pod_identity(pod)
        mapping = self.store.delete(uid)
        if mapping is None:
            return f"Pod '{uid}' is not known to the NuNet plugin; nothing to delete"
        if not mapping.job_id:  # still being posted: create cancels it once posted
            return f"Pod '{uid}' deleted; its job is cancelled as soon as DMS has posted it"
        if self._cancel(mapping.job_id, namespace, name):
            return f"Pod '{uid}' deleted"
        self._wake.set()
        return (f"Pod '{uid}' deleted; DMS could not be reached, cancelling job "
                f"{mapping.job_id} is retried until it confirms")

    def status(self, pods: Any) -> list[dict] | dict:
        if not isinstance(pods, list):
            raise PodRejected("the body must be a list of pods ([] to ping)")
        if not pods:
            return self.ping()
        return [self._pod_status(pod) for pod in pods]

    def _pod_status(self, pod: dict) -> dict:
        uid, name, namespace = pod_identity(pod)
        spec = pod.get("spec") or {}
        mapping = self.store.get(uid)
        job_id = mapping.job_id if mapping else ""
        if mapping is None or not mapping.job_id:
            # interLink polls Pending pods while their create still runs: a pod without a
            # job yet is being created, never a failure (a terminated state would end it)
            state: dict[str, Any] = {"waiting": {
                "reason": "ContainerCreating",
                "message": "the NuNet job is being posted to DMS" if mapping else
                "the NuNet plugin has not been asked to create this pod yet"}}
        else:
            try:
                with self.metrics.dms_call("job_status"):
                    state = container_state(self.dms.job_status(mapping.job_id))
            except DMSError as exc:
                if exc.status != 404:
                    raise
                # this job alone is lost: the other pods' statuses still go through
                log.warning("DMS does not know job %s of pod %s/%s", job_id, namespace, name)
                state = {"terminated": {
                    "exitCode": 1, "reason": "NuNetJobLost",
                    "message": f"DMS no longer knows NuNet job {job_id} of this pod: {exc}"}}
        recorded = {s.get("name"): s for s in (pod.get("status") or {}).get(
            "containerStatuses") or [] if isinstance(s, dict)}
        containers = []
        for container in spec.get("containers") or []:
            cname = container.get("name")
            containers.append({
                "name": cname, "state": state, "ready": "running" in state, "restartCount": 0,
                "image": container.get("image") or "",
                "imageID": (recorded.get(cname) or {}).get("imageID") or "",
            })
        return {"name": name, "UID": uid, "namespace": namespace, "JID": job_id,
                "containers": containers, "initContainers": []}

    def logs(self, request: Any) -> str:
        if not isinstance(request, dict) or not request.get("PodUID"):
            raise PodRejected("the body must be interLink's log request with PodUID")
        mapping = self.store.get(request["PodUID"])
        if mapping is None or not mapping.job_id:
            raise DMSError(f"the NuNet plugin has no job for pod {request['PodUID']}", 404)
        if (request.get("Opts") or {}).get("Previous"):
            raise DMSError(f"pod {request['PodUID']} has no previous container: a NuNet job "
                           "is never restarted", 404)
        with self.metrics.dms_call("job_logs"):
            text = self.dms.job_logs(mapping.job_id)
        return trim_logs(text, request.get("Opts") or {})


def _since(opts: dict, now: datetime) -> datetime | None:
    """The time ``SinceSeconds`` or ``SinceTime`` asks for; interLink sends Go's zero time
    (``0001-01-01T00:00:00Z``) when it asks for none."""
    seconds = int(opts.get("SinceSeconds") or 0)
    if seconds > 0:
        return now - timedelta(seconds=seconds)
    since = _line_time(str(opts.get("SinceTime") or ""))
    return since if since is not None and since.year > 1 else None


def _line_time(token: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(token.strip())
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def trim_logs(text: str, opts: dict, now: datetime | None = None) -> str:
    """Apply interLink's log options. DMS gives a job's log as text, whole:

    - ``SinceSeconds``/``SinceTime`` keep the lines from then on when DMS's lines start
      with an RFC 3339 time; lines without times cannot be filtered by time and are all
      returned. ``Timestamps`` cannot add times DMS does not give, and a line's own time is
      never taken off (it may be the program's output);
    - ``Tail`` keeps the last lines, ``Bytes`` (``LimitBytes``) the last bytes;
    - ``Follow`` answers the log so far (DMS offers no stream); ``Previous`` is answered
      by the caller (a NuNet job is never restarted).
    """
    lines = text.splitlines(keepends=True)
    times = [_line_time(line.split(" ", 1)[0]) if " " in line else None for line in lines]
    if lines and all(times):
        since = _since(opts, now or datetime.now(UTC))
        if since is not None:
            lines = [line for line, at in zip(lines, times, strict=True) if at >= since]
    tail = int(opts.get("Tail") or 0)
    if tail > 0:
        lines = lines[-tail:]
    text = "".join(lines)
    limit = int(opts.get("Bytes") or opts.get("LimitBytes") or 0)
    if limit > 0:
        text = text.encode()[-limit:].decode(errors="ignore")
    return text
