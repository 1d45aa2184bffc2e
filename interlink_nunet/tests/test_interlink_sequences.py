"""The plugin driven the way interLink 0.6.2 and its virtual kubelet drive it (see
interlink_harness), against a stand-in DMS that is slow, down, loses a job or gives odd
times."""

from __future__ import annotations

import copy
import signal
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from conftest import Process, client, fixture, start_plugin
from interlink_harness import InterLink, decode_create, wait_for

SEED_POD = fixture("seed_create_body.json")[0]


def a_pod(uid: str) -> dict:
    pod = copy.deepcopy(SEED_POD)
    pod["metadata"]["uid"], pod["metadata"]["name"] = uid, f"pod-{uid}"
    return pod


def faults(dms: Process, **changes) -> None:
    httpx.post(f"{dms.url}/_control/faults", json=changes).raise_for_status()


def dms_jobs(dms: Process) -> dict:
    return httpx.get(f"{dms.url}/_control/jobs").json()


def metric(api: httpx.Client, name: str) -> float:
    for line in api.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no metric {name}")


def test_status_polls_during_a_slow_create_read_creating(tmp_path: Path, dms: Process) -> None:
    """Item 1: with DMS taking 4 s to accept a job, every status poll during the create
    reads waiting/ContainerCreating (never terminated, which would fail the pod)."""
    plugin = start_plugin(tmp_path, dms.url, NUNET_PLUGIN_DMS_TIMEOUT_SECONDS="15")
    try:
        faults(dms, post_delay=4)
        with client(plugin) as api:
            interlink = InterLink(api)
            pod = a_pod("u-slow")
            (never,) = interlink.status([a_pod("u-never-created")])
            assert never.containers[0].state.terminated is None
            assert never.containers[0].state.waiting.reason == "ContainerCreating"

            created, polls = interlink.create_while_polling(pod)
            job_id = decode_create(created).PodJID
            assert job_id and polls, "the status loop polled while DMS took its time"
            for (status,) in polls:
                state = status.containers[0].state
                assert state.terminated is None, state
                assert state.waiting.reason == "ContainerCreating", state
            # the mapping recorded "creating" before the job was posted
            assert any("being posted" in (s.containers[0].state.waiting.message or "")
                       for (s,) in polls)
            (status,) = interlink.status([pod])
            assert status.JID == job_id and status.containers[0].state.waiting is not None
            assert status.containers[0].image == "busybox", "the image is the pod spec's"
    finally:
        plugin.stop()


def test_a_delete_during_a_slow_create_cancels_the_job_once_posted(tmp_path: Path,
                                                                    dms: Process) -> None:
    plugin = start_plugin(tmp_path, dms.url, NUNET_PLUGIN_DMS_TIMEOUT_SECONDS="15")
    try:
        faults(dms, post_delay=2)
        with client(plugin) as api:
            interlink, pod = InterLink(api), a_pod("u-gone")
            created: list[httpx.Response] = []
            creating = threading.Thread(target=lambda: created.append(interlink.create(pod)))
            creating.start()
            wait_for(lambda: "being posted" in (
                interlink.status([pod])[0].containers[0].state.waiting.message or ""),
                "the pod is recorded as being created")
            deleted = interlink.delete(pod)
            creating.join()
            assert deleted.status_code == 200, deleted.text
            job_id = decode_create(created[0]).PodJID
            assert dms_jobs(dms)[job_id]["cancelled"] is True
            assert api.get("/healthz").json()["mapped_jobs"] == 0
    finally:
        plugin.stop()


def test_a_delete_while_dms_is_down_is_retried_until_dms_confirms(tmp_path: Path,
                                                                   dms: Process) -> None:
    """Item 5: interLink sends the delete once; DMS is down. The plugin answers 200, keeps
    the cancel on disk (across its own restart), retries, and shows the backlog."""
    env = {"NUNET_PLUGIN_CANCEL_RETRY_SECONDS": "0.2"}
    plugin = start_plugin(tmp_path, dms.url, **env)
    with client(plugin) as api:
        interlink, pod = InterLink(api), a_pod("u-orphan")
        job_id = decode_create(interlink.create(pod)).PodJID
        dms.stop(signal.SIGKILL)
        deleted = interlink.delete(pod)
        assert deleted.status_code == 200, deleted.text
        assert "retried" in deleted.json()
        assert metric(api, "nunet_plugin_pending_cancels") == 1
    plugin.stop(signal.SIGKILL)
    restarted = start_plugin(tmp_path, dms.url, token=plugin.token, **env)
    try:
        with client(restarted) as api:
            assert metric(api, "nunet_plugin_pending_cancels") == 1, "kept across a restart"
            dms.start()
            wait_for(lambda: dms_jobs(dms)[job_id]["cancelled"], "DMS cancelled the job")
            wait_for(lambda: metric(api, "nunet_plugin_pending_cancels") == 0,
                     "the backlog emptied")
    finally:
        restarted.stop()


def test_one_lost_job_does_not_fail_the_others(plugin: Process, dms: Process) -> None:
    """Item 6: DMS answers 404 for one job; only that pod reads terminated (NuNetJobLost)."""
    with client(plugin) as api:
        interlink = InterLink(api)
        lost, kept = a_pod("u-lost"), a_pod("u-kept")
        lost_job = decode_create(interlink.create(lost)).PodJID
        kept_job = decode_create(interlink.create(kept)).PodJID
        httpx.post(f"{dms.url}/_control/jobs/{kept_job}/running").raise_for_status()
        httpx.delete(f"{dms.url}/_control/jobs/{lost_job}").raise_for_status()
        statuses = {s.UID: s for s in interlink.status([lost, kept])}
    terminated = statuses["u-lost"].containers[0].state.terminated
    assert terminated.reason == "NuNetJobLost" and terminated.exitCode == 1
    assert lost_job in terminated.message
    assert statuses["u-kept"].containers[0].state.running is not None


@pytest.mark.parametrize(("raw", "expected"), [
    ("2026-11-30 10:00:00", datetime(2026, 11, 30, 10, tzinfo=UTC)),  # naive: UTC
    ("2026-11-30T11:00:00+01:00", datetime(2026, 11, 30, 10, tzinfo=UTC)),
    (datetime(2026, 11, 30, 10, tzinfo=UTC).timestamp(), datetime(2026, 11, 30, 10, tzinfo=UTC)),
    (str(int(datetime(2026, 11, 30, 10, tzinfo=UTC).timestamp() * 1000)),
     datetime(2026, 11, 30, 10, tzinfo=UTC)),  # epoch milliseconds, as a string
    ("yesterday", None),
    ({"not": "a time"}, None),
])
def test_odd_dms_times_reach_interlink_as_rfc3339_or_null(plugin: Process, dms: Process,
                                                          raw, expected) -> None:
    """Item 4: whatever DMS gives as the start time, interLink can decode the answer."""
    with client(plugin) as api:
        interlink, pod = InterLink(api), a_pod("u-time")
        job_id = decode_create(interlink.create(pod)).PodJID
        httpx.post(f"{dms.url}/_control/jobs/{job_id}/running").raise_for_status()
        httpx.post(f"{dms.url}/_control/starttime/{job_id}",
                   json={"starttime": raw}).raise_for_status()
        (status,) = interlink.status([pod])  # decodes as interLink does, or fails
    assert status.containers[0].state.running.startedAt == expected


def test_a_failed_peers_dump_keeps_the_node_with_its_last_resources(plugin: Process,
                                                                    dms: Process) -> None:
    """Item 7: the ping answers the last resources and a NoSchedule taint while DMS's
    peers dump fails, says how stale in a metric, and clears the taint once it is back."""
    with client(plugin) as api:
        interlink = InterLink(api)
        fresh = interlink.ping()
        assert fresh.taints == []
        faults(dms, peers_fail=True)
        stale = interlink.ping()
        assert stale.resources == fresh.resources
        assert [(t.key, t.effect) for t in stale.taints] == [
            ("nunet.io/resources-stale", "NoSchedule")]
        assert metric(api, "nunet_plugin_resources_age_seconds") >= 0
        faults(dms, peers_fail=False)
        assert interlink.ping().taints == []


def test_before_any_peers_dump_a_failing_one_is_still_an_error(plugin: Process,
                                                               dms: Process) -> None:
    faults(dms, peers_fail=True)
    with client(plugin) as api:
        assert api.request("GET", "/status", json=[]).status_code == 502
        assert metric(api, "nunet_plugin_resources_age_seconds") == -1


def test_a_gpu_kind_gone_from_every_peer_is_sent_as_zero(plugin: Process, dms: Process) -> None:
    """Item 8: interLink only updates the resources a ping names; a GPU kind that left
    must be named with 0, or the node keeps offering it."""
    with client(plugin) as api:
        interlink = InterLink(api)
        before = {a.resourceType: a.available for a in interlink.ping().resources.accelerators}
        assert before["nunet.io/gpu.nvidia.rtx.3080.10gb"] == "4"
        faults(dms, peers=[])
        after = {a.resourceType: a.available for a in interlink.ping().resources.accelerators}
    assert after["nunet.io/gpu.nvidia.rtx.3080.10gb"] == "0"
    assert set(after) == set(before)


STAMPED = ("2026-11-30T10:00:00Z first\n2026-11-30T10:00:30Z second\n"
           "2026-11-30T10:01:00Z third\n")


@pytest.mark.parametrize(("logs", "opts", "expected"), [
    (STAMPED, {}, STAMPED),  # all zero values, SinceTime Go's zero time
    (STAMPED, {"Timestamps": True, "Tail": 1}, "2026-11-30T10:01:00Z third\n"),
    (STAMPED, {"SinceTime": "2026-11-30T10:00:30Z"}, STAMPED.split("\n", 1)[1]),
    (STAMPED, {"Bytes": 6}, "third\n"),
    (STAMPED, {"Follow": True}, STAMPED),  # the log so far: DMS offers no stream
    ("plain one\nplain two\n", {"SinceSeconds": 10, "Timestamps": True},
     "plain one\nplain two\n"),  # no times in the log: nothing to filter by
])
def test_get_logs_with_each_option(plugin: Process, dms: Process, logs, opts,
                                   expected) -> None:
    with client(plugin) as api:
        interlink, pod = InterLink(api), a_pod("u-logs")
        job_id = decode_create(interlink.create(pod)).PodJID
        httpx.post(f"{dms.url}/_control/logs/{job_id}", json={"text": logs}).raise_for_status()
        answer = interlink.get_logs(pod, **opts)
    assert answer.status_code == 200, answer.text
    assert answer.text == expected


def test_get_logs_of_a_previous_container_says_there_is_none(plugin: Process) -> None:
    with client(plugin) as api:
        interlink, pod = InterLink(api), a_pod("u-prev")
        decode_create(interlink.create(pod))
        answer = interlink.get_logs(pod, Previous=True)
    assert answer.status_code == 404
    assert "never restarted" in answer.json()["detail"]


def test_get_logs_since_seconds_keeps_the_recent_lines(plugin: Process, dms: Process) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    old, recent = (now - timedelta(hours=1)), (now - timedelta(seconds=5))
    logs = (f"{old.isoformat().replace('+00:00', 'Z')} old\n"
            f"{recent.isoformat().replace('+00:00', 'Z')} recent\n")
    with client(plugin) as api:
        interlink, pod = InterLink(api), a_pod("u-since")
        job_id = decode_create(interlink.create(pod)).PodJID
        httpx.post(f"{dms.url}/_control/logs/{job_id}", json={"text": logs}).raise_for_status()
        assert interlink.get_logs(pod, SinceSeconds=600).text == logs.split("\n", 1)[1]
