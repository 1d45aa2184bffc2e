"""playbooks/join_node.yml and leave_node.yml: governed node membership (issue 23).

Against a real policy runtime and a real control plane. The hosts are local; each has its
own scripted ``kubeadm`` that records its calls (``join`` registers the Node, which kwok
makes Ready, and writes the joined marker; ``reset`` removes it) and, for GPU hosts, an
``nvidia-smi`` that prints a Tesla T4's query output. gpu-node is described by recorded
host facts (tests/unit/fixtures/host_facts, with the interfaces a Kubernetes node adds);
the other hosts gather this host's facts. One control plane for the module.
"""

from __future__ import annotations

import copy
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from control_plane import ControlPlane
from render_site import COLLECTIONS, REPO, link_collection, run_playbook
from test_gpu_facts import SUMMARY, T4

link_collection()
sys.path.insert(0, str(COLLECTIONS))
from ansible_collections.aios.platform.plugins.modules.node_membership import (  # noqa: E402
    node_document,
)

SEED = json.loads((REPO / "policies/clusters/cluster-west-vision-001.json").read_text())
HEAD = """class AIOSv1PolicyRule:
    def __init__(self, rule_id, settings, parameters):
        pass

    def eval(self, parameters, input_data, context):
"""
GPU_MINIMUM = (
    HEAD
    + """        node = input_data["node"]
        if node["gpus"]["count"] < 1:
            return {"allowed": False, "reason": "node %s has no GPU" % node["id"]}
        return {"allowed": True, "input_data": input_data}
"""
)
BROKEN = (
    HEAD
    + """        return input_data["no such field"]
"""
)
ENDLESS = (
    HEAD
    + """        while True:
            pass
"""
)
KEEP = (
    HEAD
    + """        if input_data["node_id"] == "keep-node":
            return {"allowed": False, "reason": "keep-node is reserved until the audit"}
        return {"allowed": True, "input_data": input_data}
"""
)
TOKEN = "abcdef.0123456789abcdef"
JOIN = (
    f"kubeadm join 127.0.0.1:6443 --token {TOKEN} --discovery-token-ca-cert-hash sha256:" + "0" * 64
)
GPU_HOSTS = ("gpu-node", "keep-node", "stuck-node")
NEW_NODES = ("gpu-node", "warn-node", "dryrun-node", "cpu-node", "err-node", "slow-node")
JOINING = ("gpu-node", "warn-node", "dryrun-node")
HOST_FACTS = REPO / "tests" / "unit" / "fixtures" / "host_facts"
# gpu-node: the recorded VM's facts with the recorded Kubernetes interfaces added, and a T4.
GPU_NODE = {
    "id": "gpu-node",
    "gpus": {
        "count": 1,
        "memory": 15360,
        "gpus": [{"modelName": "Tesla T4", "memory": 15360}],
        "features": ["fp16", "tensor_cores"],
        "modelNames": ["Tesla T4"],
    },
    "vcpus": {"count": 2},
    "memory": 24105,
    "swap": 0,
    "storage": {"disks": 1, "size": 262144},
    "network": {"interfaces": 1, "txBandwidth": 0, "rxBandwidth": 0},
}
# Members before the leave: in the registry and on the control plane, joined.
MEMBERS = ("keep-node", "stuck-node")
LEAVING = ("gpu-node", *MEMBERS)


def script(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)


def kubeadm(host_dir: Path, kubeconfig: Path) -> str:
    """A kubeadm that records its calls and does what a join and a reset leave behind."""
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": "NODE",
            "labels": {"kubernetes.io/hostname": "NODE"},
            "annotations": {"kwok.x-k8s.io/node": "fake"},
        },
        "status": {
            "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110"},
            "allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"},
        },
    }
    return f"""#!/bin/sh
echo "$*" >> {host_dir}/kubeadm.log
case "$1" in
  token) echo "{JOIN}" ;;
  join)
    name=""
    while [ $# -gt 0 ]; do [ "$1" = --node-name ] && name="$2"; shift; done
    echo '{json.dumps(node)}' | sed "s/NODE/$name/g" | \\
      kubectl --kubeconfig {kubeconfig} create -f - >/dev/null || exit 1
    touch {host_dir}/joined ;;
  reset) rm -f {host_dir}/joined ;;
esac
"""


def calls(tmp: Path, host: str) -> list[str]:
    log = tmp / host / "kubeadm.log"
    return log.read_text().splitlines() if log.exists() else []


def recorded_facts() -> dict:
    """The recorded VM's facts with the recorded container and overlay interfaces added."""
    vm = json.loads((HOST_FACTS / "vm_no_gpu.json").read_text())
    added = json.loads((HOST_FACTS / "kubernetes_virtual_interfaces.json").read_text())
    return {**vm, **added, "interfaces": vm["interfaces"] + added["interfaces"]}


class Env:
    def __init__(self, tmp: Path, kube: ControlPlane, url: str, token: str) -> None:
        self.tmp, self.kube, self.url = tmp, kube, url
        self.api = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60
        )
        self.token = token
        uid = secrets.token_hex(3)
        self.cluster = f"members-{uid}"
        self.broken = f"members-broken-{uid}"
        self.slow = f"members-slow-{uid}"
        self.warned = f"members-warn-{uid}"
        self.dryrun = f"members-dryrun-{uid}"
        for cid, add_node in (
            (self.cluster, GPU_MINIMUM),
            (self.broken, BROKEN),
            (self.slow, ENDLESS),
            (self.warned, GPU_MINIMUM),
            (self.dryrun, GPU_MINIMUM),
        ):
            created = self.api.post("/clusters", json={**copy.deepcopy(SEED), "id": cid})
            assert created.status_code == 201, created.text
            changes = {"add_node": self.publish(add_node)}
            if cid == self.cluster:
                changes["remove_node"] = self.publish(KEEP)
            mapped = self.api.post(
                "/pre-check-policies/update", params={"cluster_id": cid}, json=changes
            )
            assert mapped.status_code == 200, mapped.text
        for cid, mode in ((self.warned, "warn"), (self.dryrun, "dryrun")):
            answer = self.api.post(
                "/pre-check-policies/enforcement",
                params={"cluster_id": cid},
                json={"add_node": mode},
            )
            assert answer.status_code == 200, answer.text
        self.inventory = self.write_inventory()

    def publish(self, code: str) -> str:
        name = f"aiosv1.policies.test.members-{secrets.token_hex(4)}"
        answer = self.api.post("/policies", json={"name": name, "version": "v1", "code": code})
        assert answer.status_code == 201, answer.text
        return answer.json()["policy_rule_uri"]

    def host(self, name: str) -> dict:
        directory = self.tmp / name
        script(directory / "bin" / "kubeadm", kubeadm(directory, self.kube.kubeconfig))
        if name in GPU_HOSTS:
            script(
                directory / "bin" / "nvidia-smi",
                f'#!/bin/sh\nif [ -n "$1" ]; then echo "{T4}"; exit 0; fi\necho "{SUMMARY}"\n',
            )
        variables = {
            "node_membership_kubeadm": str(directory / "bin" / "kubeadm"),
            "node_membership_joined_marker": str(directory / "joined"),
            "node_membership_environment": {"PATH": f"{directory / 'bin'}:/usr/bin:/bin"},
        }
        if name == "gpu-node":
            variables["node_membership_facts"] = recorded_facts()
        if name == "err-node":
            variables["node_membership_cluster_id"] = self.broken
        if name == "slow-node":
            variables["node_membership_cluster_id"] = self.slow
        if name == "warn-node":
            variables["node_membership_cluster_id"] = self.warned
        if name == "dryrun-node":
            variables["node_membership_cluster_id"] = self.dryrun
        return variables

    def write_inventory(self) -> Path:
        hosts = {name: self.host(name) for name in (*NEW_NODES, *MEMBERS)}
        inventory = {
            "all": {
                "vars": {
                    "ansible_connection": "local",
                    "ansible_python_interpreter": sys.executable,
                },
                "children": {
                    "aios_control_plane": {"hosts": {"cp-1": self.host("cp-1")}},
                    "aios_new_nodes": {"hosts": {h: hosts[h] for h in NEW_NODES}},
                    "aios_leaving_nodes": {"hosts": {h: hosts[h] for h in LEAVING}},
                },
            }
        }
        path = self.tmp / "hosts.yml"
        path.write_text(yaml.safe_dump(inventory))
        return path

    def play(self, name: str, *args: str) -> subprocess.CompletedProcess:
        variables = {
            "aios_api_url": self.url,
            "aios_api_token": self.token,
            "aios_cluster_id": self.cluster,
            "aios_kubeconfig": str(self.kube.kubeconfig),
            "node_membership_become": False,
            "node_membership_ready_timeout": 60,
            "node_membership_drain_timeout": 60,
        }
        return run_playbook(
            name,
            variables,
            *args,
            inventory=str(self.inventory),
            env={"ANSIBLE_FORKS": "8"},
            timeout=600,
        )

    def join_directly(self, name: str) -> None:
        """A node that joined earlier: a kwok Node, the joined marker, a registry entry."""
        self.kube.add(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
                "spec": {},
                "status": {"allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"}},
            }
        )
        (self.tmp / name / "joined").touch()
        node = {
            "id": name,
            "gpus": GPU_NODE["gpus"],
            "vcpus": {"count": 8},
            "memory": 32768,
            "swap": 0,
            "storage": {"disks": 1, "size": 102400},
            "network": {"interfaces": 1, "txBandwidth": 1250, "rxBandwidth": 1250},
        }
        added = self.api.post(
            "/cluster-actions/add-node", params={"cluster_id": self.cluster}, json=node
        )
        assert added.status_code == 200, added.text
        self.kube.wait_for(
            f"{name} Ready",
            lambda: any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in (self.kube.get("Node", name) or {}).get("status", {}).get("conditions")
                or []
            ),
        )

    def node_ids(self, cid: str | None = None) -> list[str]:
        document = self.api.get(f"/clusters/{cid or self.cluster}").json()
        return [n["id"] for n in document["nodes"]["nodeData"]]

    def registered(self, node_id: str, cid: str | None = None) -> dict:
        document = self.api.get(f"/clusters/{cid or self.cluster}").json()
        return next(n for n in document["nodes"]["nodeData"] if n["id"] == node_id)


def recap(output: str, host: str) -> str:
    return next(
        line for line in output.splitlines() if line.startswith(f"{host} ") and "ok=" in line
    )


def local_facts(tmp: Path) -> dict:
    """This host's Ansible facts, as the setup module reports them."""
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible"),
            "localhost",
            "-c",
            "local",
            "-m",
            "setup",
            "-a",
            "gather_subset=!all,hardware,network",
            "-e",
            f"ansible_python_interpreter={sys.executable}",
            "-o",
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "ANSIBLE_NOCOLOR": "1"},
    )
    return json.loads(done.stdout.split("=>", 1)[1])["ansible_facts"]


@pytest.fixture(scope="module")
def env(start_control_plane, runtime, tmp_path_factory: pytest.TempPathFactory) -> Env:
    url, token = runtime
    return Env(tmp_path_factory.mktemp("members"), start_control_plane(), url, token)


@pytest.fixture(scope="module")
def joined(env: Env) -> tuple:
    check = env.play("join_node.yml", "--check")
    state_after_check = (
        {h: calls(env.tmp, h) for h in (*NEW_NODES, "cp-1")},
        env.node_ids(),
        env.kube.names("Node"),
    )
    first = env.play("join_node.yml")
    logs_after_first = {h: calls(env.tmp, h) for h in (*NEW_NODES, "cp-1")}
    second = env.play("join_node.yml")
    for name, run in (("check", check), ("first", first), ("second", second)):
        (env.tmp / f"join-{name}.out").write_text(run.stdout + run.stderr)
    return check, state_after_check, first, logs_after_first, second


def test_check_mode_asks_the_policy_and_joins_nothing(joined: tuple) -> None:
    check, (logs, node_ids, nodes), *_ = joined
    assert "node cpu-node has no GPU" in check.stdout, check.stdout[-4000:]
    assert "gpu-node: join allowed" in check.stdout
    assert all(not lines for lines in logs.values()), logs
    assert "gpu-node" not in node_ids and "gpu-node" not in nodes


def test_an_allowed_node_joins_once(env: Env, joined: tuple) -> None:
    _, _, first, logs, second = joined
    assert "gpu-node: join allowed" in first.stdout, first.stdout[-6000:]
    (join,) = logs["gpu-node"]
    assert join.startswith("join 127.0.0.1:6443 --token") and "--node-name gpu-node" in join
    assert logs["cp-1"] == ["token create --print-join-command"] * len(JOINING)
    node = env.kube.get("Node", "gpu-node")
    ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"]
    assert ready == "True"
    assert (
        node["metadata"]["annotations"]["gpu.aios/info"]
        == '[{"modelName":"Tesla T4","memory":15360}]'
    )
    assert "changed=0" in recap(second.stdout, "gpu-node"), second.stdout[-6000:]
    assert calls(env.tmp, "gpu-node") == logs["gpu-node"]
    assert calls(env.tmp, "cp-1") == logs["cp-1"]


def test_a_denied_node_never_sees_kubeadm(env: Env, joined: tuple) -> None:
    _, _, first, logs, _ = joined
    assert first.returncode != 0
    assert "node cpu-node has no GPU" in first.stdout
    assert "cpu-node: join DENIED" in first.stdout
    assert "failed=1" in recap(first.stdout, "cpu-node")
    assert logs["cpu-node"] == [] and "cpu-node" not in env.kube.names("Node")
    assert "cpu-node" not in env.node_ids()


def test_a_policy_that_errors_or_times_out_fails_closed(env: Env, joined: tuple) -> None:
    _, _, first, logs, _ = joined
    for host, cid in (("err-node", env.broken), ("slow-node", env.slow)):
        line = next(x for x in first.stdout.splitlines() if f"{host}: join DENIED" in x)
        assert "(fail closed)" in line, line
        assert logs[host] == [] and host not in env.node_ids(cid)
    assert "KeyError" in first.stdout


@pytest.mark.parametrize("mode", ["warn", "dryrun"])
def test_warn_and_dryrun_let_a_denied_node_join_and_say_so(
    env: Env, joined: tuple, mode: str
) -> None:
    """The runtime lets an action its policy denied through under warn and dryrun alike."""
    _, _, first, logs, _ = joined
    host, cid = f"{mode}-node", {"warn": env.warned, "dryrun": env.dryrun}[mode]
    assert (
        f"{host}: join allowed under {mode} enforcement, the policy denied it "
        f"(node {host} has no GPU)" in first.stdout
    ), first.stdout[-6000:]
    warning = f"{host}: the policy denied it (node {host} has no GPU), but the enforcement mode"
    assert f"{warning} is {mode}" in " ".join(first.stderr.split())
    assert [c.split()[0] for c in logs[host]] == ["join"]
    assert host in env.node_ids(cid) and host in env.kube.names("Node")


def test_the_join_token_is_never_shown(joined: tuple) -> None:
    check, _, first, _, second = joined
    for run in (check, first, second):
        assert TOKEN not in run.stdout + run.stderr


def test_the_registry_holds_the_node_as_its_facts_say(env: Env, joined: tuple) -> None:
    # Recorded facts: 13 interfaces, of which only eth0 is a network card.
    assert env.registered("gpu-node") == GPU_NODE
    # This host's facts, gathered by the role.
    live = {k.removeprefix("ansible_"): v for k, v in local_facts(env.tmp).items()}
    assert env.registered("warn-node", env.warned) == node_document("warn-node", live, None)


def stay_on_stuck_node(env: Env) -> None:
    """Pods a drain leaves on stuck-node: a static pod's mirror pod (owned by the Node, as
    the kubelet creates it) and a DaemonSet's pod."""
    node = env.kube.get("Node", "stuck-node")
    env.kube.add(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "static-web-stuck-node",
                "namespace": "kube-system",
                "annotations": {
                    "kubernetes.io/config.mirror": "0" * 32,
                    "kubernetes.io/config.source": "file",
                },
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "Node",
                        "name": "stuck-node",
                        "uid": node["metadata"]["uid"],
                        "controller": True,
                    }
                ],
            },
            "spec": {
                "nodeName": "stuck-node",
                "containers": [{"name": "web", "image": "busybox"}],
            },
        }
    )
    env.kube.add(
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": "agent", "namespace": "kube-system"},
            "spec": {
                "selector": {"matchLabels": {"app": "agent"}},
                "template": {
                    "metadata": {"labels": {"app": "agent"}},
                    "spec": {
                        "nodeSelector": {"kubernetes.io/hostname": "stuck-node"},
                        "containers": [{"name": "a", "image": "busybox"}],
                    },
                },
            },
        }
    )
    env.kube.wait_for(
        "the mirror pod and the DaemonSet's pod running on stuck-node",
        lambda: (
            sum(
                p["spec"].get("nodeName") == "stuck-node" and p["status"].get("phase") == "Running"
                for p in env.kube.list("Pod", "kube-system")
            )
            == 2
        ),
    )


def test_leave_drains_removes_and_stops_at_a_denial_or_a_stuck_pod(env: Env, joined: tuple) -> None:
    for member in MEMBERS:
        env.join_directly(member)
    env.kube.add(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "worker", "namespace": "default"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "worker"}},
                "template": {
                    "metadata": {"labels": {"app": "worker"}},
                    "spec": {
                        "nodeSelector": {"kubernetes.io/hostname": "gpu-node"},
                        "containers": [{"name": "w", "image": "busybox"}],
                    },
                },
            },
        }
    )
    env.kube.wait_for(
        "the worker pod running on gpu-node",
        lambda: any(
            p["spec"].get("nodeName") == "gpu-node" and p["status"].get("phase") == "Running"
            for p in env.kube.list("Pod", "default")
        ),
    )
    env.kube.add(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "guarded", "namespace": "default"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "guarded"}},
                "template": {
                    "metadata": {"labels": {"app": "guarded"}},
                    "spec": {
                        "nodeSelector": {"kubernetes.io/hostname": "stuck-node"},
                        "containers": [{"name": "g", "image": "busybox"}],
                    },
                },
            },
        }
    )
    env.kube.add(
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "guarded", "namespace": "default"},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "guarded"}}},
        }
    )
    env.kube.wait_for(
        "the guarded pod running on stuck-node",
        lambda: any(
            p["spec"].get("nodeName") == "stuck-node" and p["status"].get("phase") == "Running"
            for p in env.kube.list("Pod", "default")
        ),
    )
    stay_on_stuck_node(env)
    preview = env.play("leave_node.yml", "--check")
    assert "gpu-node: leave allowed (allowed) [check mode: nothing changed]" in preview.stdout
    assert "keep-node: leave DENIED" in preview.stdout, preview.stdout[-6000:]
    assert calls(env.tmp, "gpu-node")[-1].startswith("join")
    assert not env.kube.get("Node", "gpu-node")["spec"].get("unschedulable")
    assert "gpu-node" in env.node_ids()
    left = env.play("leave_node.yml")
    (env.tmp / "leave.out").write_text(left.stdout + left.stderr)
    assert "keep-node is reserved until the audit" in left.stdout, left.stdout[-6000:]
    assert "gpu-node: leave allowed" in left.stdout
    assert "gpu-node" not in env.kube.names("Node")
    assert "gpu-node" not in env.node_ids()
    assert calls(env.tmp, "gpu-node")[-1] == "reset --force"
    assert not (env.tmp / "gpu-node" / "joined").exists()
    keep = env.kube.get("Node", "keep-node")
    assert not keep["spec"].get("unschedulable")
    assert "keep-node" in env.node_ids()
    assert calls(env.tmp, "keep-node") == []
    guarded = next(
        p["metadata"]["name"]
        for p in env.kube.list("Pod", "default")
        if p["spec"].get("nodeName") == "stuck-node"
    )
    # Only the guarded pod: the drain leaves the mirror pod and the DaemonSet's pod alone.
    assert f"pods that would not move: default/{guarded}; the node stays" in left.stdout
    assert "stuck-node: leave FAILED" in left.stdout
    assert "stuck-node" in env.kube.names("Node") and "stuck-node" in env.node_ids()
    assert calls(env.tmp, "stuck-node") == []
    assert (env.tmp / "stuck-node" / "joined").exists()
