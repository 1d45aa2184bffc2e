"""interLink as the plugin meets it: its call sequences, its bodies, its decoding.

Facts carried over from interLink 0.6.2 (interlink-hq/interLink, commit
84a381055341e72fa6c504c9deba32fd04f10c4c), read there, not copied:

- pkg/interlink/types.go: the create body is ``RetrievedPodData`` (``pod``, ``container``:
  ``[{name, configMaps, projectedvolumemaps, secrets, emptyDirs}]``, ``jobConfig``); Go
  marshals an empty slice of those as ``null``. The create answer is ``CreateStruct``
  (``PodUID``, ``PodJID``), a status answer ``[]PodStatus`` (``name``, ``UID``,
  ``namespace``, ``JID``, ``containers``, ``initContainers`` of ``v1.ContainerStatus``),
  the ping answer ``PingResponse`` (``status``, ``resources`` {``cpu``, ``memory``,
  ``pods``, ``accelerators`` [{``resourceType``, ``available``}]}, ``taints`` [{``key``,
  ``value``, ``effect``}]) and the log request ``LogStruct`` with ``Opts``
  (``Tail``, ``Bytes``, ``Timestamps``, ``Follow``, ``Previous``, ``SinceSeconds``,
  ``SinceTime``; a zero ``SinceTime`` marshals as ``0001-01-01T00:00:00Z``).
- pkg/interlink/api/status.go: a status answer that does not decode is a 500 to the
  virtual kubelet; pkg/interlink/api/delete.go: a delete is forwarded once, a failure only
  logged. pkg/virtualkubelet/virtualkubelet.go: ``CreatePod`` runs the create in the
  background while ``statusLoop`` polls every pod not Failed or Succeeded every 5 s, and
  never polls a Failed pod again; ``nodeUpdate`` pings with ``[]`` and marks the node
  NotReady on any answer but 200.
- k8s.io/apimachinery metav1.Time: a time decodes from ``null`` or a JSON string that
  Go's ``time.Parse(time.RFC3339, ...)`` accepts; anything else fails the whole answer.
"""

from __future__ import annotations

import re
import threading
import time
from datetime import datetime
from typing import Annotated, Any

import httpx
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictStr

RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")
ZERO_TIME = "0001-01-01T00:00:00Z"


def _go_time(value: Any) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str) or not RFC3339.fullmatch(value):
        raise ValueError(f"interLink cannot decode {value!r} as a time (RFC 3339 or null)")
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _int32(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not -2**31 <= value < 2**31:
        raise ValueError(f"interLink cannot decode {value!r} as an int32")
    return value


GoTime = Annotated[datetime | None, BeforeValidator(_go_time)]
Int32 = Annotated[int | None, BeforeValidator(_int32)]
Str = StrictStr | None


class GoStruct(BaseModel):
    """Go's decoder ignores unknown fields and leaves a null field at its zero value."""

    model_config = ConfigDict(extra="ignore", strict=True)


class Waiting(GoStruct):
    reason: Str = None
    message: Str = None


class Running(GoStruct):
    startedAt: GoTime = None


class Terminated(GoStruct):
    exitCode: Int32 = None
    signal: Int32 = None
    reason: Str = None
    message: Str = None
    startedAt: GoTime = None
    finishedAt: GoTime = None
    containerID: Str = None


class ContainerState(GoStruct):
    waiting: Waiting | None = None
    running: Running | None = None
    terminated: Terminated | None = None


class ContainerStatus(GoStruct):
    name: Str = None
    state: ContainerState | None = None
    lastState: ContainerState | None = None
    ready: StrictBool | None = None
    restartCount: Int32 = None
    image: Str = None
    imageID: Str = None
    containerID: Str = None
    started: StrictBool | None = None


class PodStatus(GoStruct):
    name: Str = None
    UID: Str = None
    namespace: Str = None
    JID: Str = None
    containers: list[ContainerStatus] | None = None
    initContainers: list[ContainerStatus] | None = None


class CreateStruct(GoStruct):
    PodUID: Str = None
    PodJID: Str = None


class Accelerator(GoStruct):
    resourceType: Str = None
    available: Str = None


class Resources(GoStruct):
    cpu: Str = None
    memory: Str = None
    pods: Str = None
    accelerators: list[Accelerator] | None = None


class Taint(GoStruct):
    key: Str = None
    value: Str = None
    effect: Str = None


class PingResponse(GoStruct):
    status: Str = None
    resources: Resources | None = None
    taints: list[Taint] | None = Field(default=None)


def decode_statuses(response: httpx.Response) -> list[PodStatus]:
    assert response.status_code == 200, f"interLink's status handler fails: {response.text}"
    body = response.json()
    assert isinstance(body, list), body
    return [PodStatus.model_validate(item) for item in body]


def decode_ping(response: httpx.Response) -> PingResponse:
    assert response.status_code == 200, f"the virtual node goes NotReady: {response.text}"
    return PingResponse.model_validate(response.json())


def decode_create(response: httpx.Response) -> CreateStruct:
    assert response.status_code == 200, response.text
    return CreateStruct.model_validate(response.json())


def as_scheduled(pod: dict, phase: str = "Pending") -> dict:
    """The pod as the virtual kubelet sends it, with the status it has recorded."""
    containers = (pod.get("spec") or {}).get("containers") or []
    return {**pod, "status": {"phase": phase, "containerStatuses": [
        {"name": c["name"], "image": c.get("image", ""), "imageID": "",
         "state": {"waiting": {"reason": "Remote pod submitted"}}, "ready": False,
         "restartCount": 0} for c in containers]}}


class InterLink:
    """Makes the plugin's calls as interLink 0.6.2's API server forwards them."""

    def __init__(self, api: httpx.Client) -> None:
        self.api = api

    def create(self, pod: dict, config_maps: list | None = None) -> httpx.Response:
        body = {
            "pod": pod,
            "container": [{"name": c["name"], "configMaps": config_maps or None,
                           "projectedvolumemaps": None, "secrets": None, "emptyDirs": None}
                          for c in pod["spec"]["containers"]],
            "jobConfig": {"SingularityHubProxy": {}, "ApptainerOptions": {}, "Volumes": {}},
        }
        return self.api.post("/create", json=body)

    def status(self, pods: list[dict]) -> list[PodStatus]:
        return decode_statuses(self.api.request("GET", "/status", json=[
            as_scheduled(p) for p in pods]))

    def ping(self) -> PingResponse:
        return decode_ping(self.api.request("GET", "/status", json=[]))

    def delete(self, pod: dict) -> httpx.Response:
        return self.api.post("/delete", json=pod)

    def get_logs(self, pod: dict, **opts: Any) -> httpx.Response:
        metadata = pod["metadata"]
        return self.api.request("GET", "/getLogs", json={
            "Namespace": metadata.get("namespace", "default"), "PodUID": metadata["uid"],
            "PodName": metadata["name"], "ContainerName": pod["spec"]["containers"][0]["name"],
            "Opts": {"Tail": 0, "Bytes": 0, "Timestamps": False, "Follow": False,
                     "Previous": False, "SinceSeconds": 0, "SinceTime": ZERO_TIME, **opts}})

    def create_while_polling(self, pod: dict, every: float = 0.2
                             ) -> tuple[httpx.Response, list[list[PodStatus]]]:
        """``CreatePod``: the create runs in the background while the status loop polls
        the Pending pod; the polls (each decoded as interLink would) are returned too."""
        answer: list[httpx.Response | BaseException] = []

        def run() -> None:
            try:
                answer.append(self.create(pod))
            except BaseException as exc:  # reported to the test below
                answer.append(exc)

        creating = threading.Thread(target=run)
        creating.start()
        polls = []
        while creating.is_alive():
            polls.append(self.status([pod]))
            creating.join(every)
        (result,) = answer
        if isinstance(result, BaseException):
            raise result
        return result, polls


def wait_for(check, what: str, seconds: float = 30):
    """Poll ``check`` until it returns something true (a bound, not an assertion on time)."""
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not after {seconds} s")
        time.sleep(0.1)
