"""A real Kubernetes control plane on loopback for the integration tests.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler built from the Kubernetes
and etcd sources pinned under tests/controlplane/ (scripts/build_control_plane.sh), with
kwok playing the nodes: their pods go Running and Ready, a Job's pods Succeeded, a
PersistentVolumeClaim of the ``kwok-volume`` StorageClass gets a volume. The API server
runs with RBAC and Node authorization and its default admission plugins; clients
authenticate with certificates from a CA made here, controllers with their own service
account tokens.

    plane = ControlPlane(workdir).start()
    plane.kubeconfig        # an admin (system:masters) kubeconfig
    plane.add(node)         # create any object; a Node becomes a kwok node
    plane.get("Deployment", "parser", "registries")
    plane.stop()
"""

from __future__ import annotations

import base64
import contextlib
import copy
import ctypes
import datetime
import ipaddress
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "scripts" / "build_control_plane.sh"
KWOK_NODE = "kwok.x-k8s.io/node"
STORAGE_CLASS = "kwok-volume"
# Server-managed fields that an object read from a real cluster carries.
_SERVER_FIELDS = ("uid", "resourceVersion", "creationTimestamp", "generation", "managedFields",
                  "selfLink")


def bin_dir(build: bool = True) -> Path:
    """The directory of the control plane's binaries, built first when missing."""
    args = ["bash", str(BUILD_SCRIPT)] + ([] if build else ["--print"])
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"building the control plane failed:\n{done.stderr[-4000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class _CA:
    """A certificate authority that signs the serving and client certificates."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "aios-test-ca")])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                         False), critical=True)
            .sign(self.key, hashes.SHA256())
        )

    def issue(self, common_name: str, organization: str | None = None,
              server: bool = False) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
        if organization:
            attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder().subject_name(x509.Name(attributes))
            .issuer_name(self.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.ExtendedKeyUsage(
                [x509.ExtendedKeyUsageOID.SERVER_AUTH if server
                 else x509.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        )
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.DNSName("kubernetes"),
                x509.DNSName("kubernetes.default.svc"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.IPAddress(ipaddress.ip_address("10.96.0.1")),
            ]), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


class ControlPlane:
    """etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok on loopback."""

    def __init__(self, workdir: Path, binaries: Path | None = None) -> None:
        self.dir = Path(workdir)
        self.bin = binaries or bin_dir()
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.port = 0
        self.kubeconfig = self.dir / "admin.kubeconfig"
        self.start_seconds = 0.0
        self._client = None

    # --- files -------------------------------------------------------------------------

    def _write(self, name: str, data: bytes | str, mode: int = 0o600) -> Path:
        path = self.dir / "pki" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        path.chmod(mode)
        return path

    def _pki(self) -> None:
        ca = _CA()
        self.ca_file = self._write("ca.crt", ca.cert.public_bytes(serialization.Encoding.PEM))
        self.ca_key_file = self._write("ca.key", _pem_key(ca.key))
        cert, key = ca.issue("kube-apiserver", server=True)
        self.serving = (self._write("apiserver.crt", cert), self._write("apiserver.key", key))
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.sa_key_file = self._write("sa.key", _pem_key(sa_key))
        self.sa_pub_file = self._write("sa.pub", sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        self._ca = ca

    def client_kubeconfig(self, path: Path, user: str, organization: str | None = None) -> Path:
        """A kubeconfig that authenticates as ``user`` (in ``organization``) by certificate."""
        cert, key = self._ca.issue(user, organization)
        return self._kubeconfig(path, {"client-certificate-data": _b64(cert),
                                       "client-key-data": _b64(key)})

    def token_kubeconfig(self, path: Path, token: str) -> Path:
        """A kubeconfig that authenticates with a bearer token (a ServiceAccount's)."""
        return self._kubeconfig(path, {"token": token})

    def _kubeconfig(self, path: Path, user: dict) -> Path:
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "aios-test",
            "clusters": [{"name": "aios-test", "cluster": {
                "server": f"https://127.0.0.1:{self.port}",
                "certificate-authority-data": _b64(self.ca_file.read_bytes())}}],
            "users": [{"name": "user", "user": user}],
            "contexts": [{"name": "aios-test", "context": {"cluster": "aios-test",
                                                           "user": "user"}}],
        }
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    # --- processes ---------------------------------------------------------------------

    def _spawn(self, name: str, *args: str) -> subprocess.Popen:
        log = (self.dir / "logs" / f"{name}.log")
        log.parent.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen(
            [str(self.bin / name), *args], stdout=log.open("wb"), stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True, cwd=self.dir,
            preexec_fn=_die_with_parent,
        )
        self.procs.append((name, proc))
        return proc

    def _wait(self, what: str, ready, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited ({proc.returncode}):\n{self.log(name)}")
            with contextlib.suppress(OSError, urllib.error.URLError, ssl.SSLError):
                if ready():
                    return
            time.sleep(0.2)
        raise RuntimeError(f"{what} was not ready within {timeout} s")

    def log(self, name: str, tail: int = 4000) -> str:
        path = self.dir / "logs" / f"{name}.log"
        return path.read_text(errors="replace")[-tail:] if path.exists() else ""

    def start(self) -> ControlPlane:
        began = time.monotonic()
        self.dir.mkdir(parents=True, exist_ok=True)
        self._pki()
        etcd_port, peer_port = free_port(), free_port()
        self._spawn(
            "etcd", "--name=aios-test", f"--data-dir={self.dir / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
            f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
            f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-cluster=aios-test=http://127.0.0.1:{peer_port}",
            "--unsafe-no-fsync=true", "--log-level=warn", "--quota-backend-bytes=1073741824",
        )
        self._wait("etcd", lambda: urllib.request.urlopen(
            f"http://127.0.0.1:{etcd_port}/health", timeout=1).status == 200)

        self.port = free_port()
        self._spawn(
            "kube-apiserver", "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            f"--secure-port={self.port}", f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            f"--tls-cert-file={self.serving[0]}", f"--tls-private-key-file={self.serving[1]}",
            f"--client-ca-file={self.ca_file}", "--authorization-mode=Node,RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={self.sa_pub_file}",
            f"--service-account-signing-key-file={self.sa_key_file}",
            "--service-cluster-ip-range=10.96.0.0/16", "--service-node-port-range=30000-32767",
            "--allow-privileged=true", "--endpoint-reconciler-type=none",
            f"--cert-dir={self.dir / 'pki'}", "--v=1",
        )
        self.client_kubeconfig(self.kubeconfig, "aios-test-admin", "system:masters")
        context = ssl.create_default_context(cafile=str(self.ca_file))
        context.load_cert_chain(*self._client_pair())
        self._wait("kube-apiserver", lambda: urllib.request.urlopen(
            f"https://127.0.0.1:{self.port}/readyz", timeout=2, context=context).status == 200)

        kcm = self.client_kubeconfig(self.dir / "kcm.kubeconfig",
                                     "system:kube-controller-manager")
        self._spawn(
            "kube-controller-manager", f"--kubeconfig={kcm}", "--controllers=*",
            "--use-service-account-credentials=true", "--leader-elect=false",
            f"--service-account-private-key-file={self.sa_key_file}",
            f"--root-ca-file={self.ca_file}", f"--cluster-signing-cert-file={self.ca_file}",
            f"--cluster-signing-key-file={self.ca_key_file}", "--bind-address=127.0.0.1",
            "--secure-port=0", "--node-monitor-grace-period=60s", "--v=1",
        )
        scheduler = self.client_kubeconfig(self.dir / "scheduler.kubeconfig",
                                           "system:kube-scheduler")
        self._spawn("kube-scheduler", f"--kubeconfig={scheduler}", "--leader-elect=false",
                    "--bind-address=127.0.0.1", "--secure-port=0", "--v=1")
        kwok = self.client_kubeconfig(self.dir / "kwok.kubeconfig", "kwok", "system:masters")
        self._spawn(
            "kwok", f"--kubeconfig={kwok}", f"--config={self.bin.parent / 'kwok-stages.yaml'}",
            f"--manage-nodes-with-annotation-selector={KWOK_NODE}=fake",
            "--node-lease-duration-seconds=40", f"--server-address=127.0.0.1:{free_port()}",
            "--node-ip=127.0.0.1",
        )
        # The default ServiceAccount of a namespace exists once the controllers run.
        self._wait("kube-controller-manager", lambda: self.get(
            "ServiceAccount", "default", "default") is not None)
        self.add({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                  "metadata": {"name": STORAGE_CLASS, "annotations": {
                      "storageclass.kubernetes.io/is-default-class": "true"}},
                  "provisioner": "kwok.x-k8s.io/volume", "reclaimPolicy": "Delete",
                  "volumeBindingMode": "Immediate"})
        self.start_seconds = time.monotonic() - began
        return self

    def _client_pair(self) -> tuple[str, str]:
        config = yaml.safe_load(self.kubeconfig.read_text())["users"][0]["user"]
        cert = self._write("admin.crt", base64.b64decode(config["client-certificate-data"]))
        key = self._write("admin.key", base64.b64decode(config["client-key-data"]))
        return str(cert), str(key)

    def stop(self) -> None:
        """Stop every component, the last started first (etcd after the API server)."""
        for _, proc in reversed(self.procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        self.procs.clear()

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # --- the API -----------------------------------------------------------------------

    @property
    def client(self):
        """A kubernetes.dynamic.DynamicClient with admin rights."""
        if self._client is None:
            from kubernetes import config, dynamic

            api = config.new_client_from_config(config_file=str(self.kubeconfig))
            self._client = dynamic.DynamicClient(api)
        return self._client

    def resource(self, kind: str, api_version: str | None = None):
        return self.client.resources.get(kind=kind, **(
            {"api_version": api_version} if api_version else {}))

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict | None:
        from kubernetes.dynamic.exceptions import NotFoundError

        try:
            return self.resource(kind).get(name=name, namespace=namespace).to_dict()
        except NotFoundError:
            return None

    def list(self, kind: str, namespace: str | None = None, **selectors: str) -> list[dict]:
        return self.resource(kind).get(namespace=namespace, **selectors).to_dict()["items"]

    def names(self, kind: str, namespace: str | None = None) -> set[str]:
        return {o["metadata"]["name"] for o in self.list(kind, namespace)}

    def delete(self, kind: str, name: str, namespace: str | None = None) -> None:
        from kubernetes.dynamic.exceptions import NotFoundError

        with contextlib.suppress(NotFoundError):
            self.resource(kind).delete(name=name, namespace=namespace,
                                       body={"propagationPolicy": "Background"})

    def ensure_namespace(self, name: str) -> None:
        if self.get("Namespace", name) is None:
            self.add({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})

    def add(self, obj: dict, kwok: bool = True) -> dict:
        """Create ``obj`` as read from a cluster (server fields are dropped).

        A Node is made a kwok node, keeping its capacity, labels, annotations and taints;
        its conditions are left to kwok (with ``kwok=False`` it keeps its status and nothing
        manages it). A Service loses its cluster IPs.
        """
        obj = _clean(obj)
        kind = obj["kind"]
        namespace = obj["metadata"].get("namespace")
        if namespace:
            self.ensure_namespace(namespace)
        if kind == "Node":
            if kwok:
                obj["metadata"].setdefault("annotations", {})[KWOK_NODE] = "fake"
            obj["spec"].pop("podCIDR", None)
            obj["spec"].pop("podCIDRs", None)
            if kwok:
                obj.get("status", {}).pop("conditions", None)
            # A Node keeps the status it is created with, as when a kubelet registers it.
            return self.resource(kind, obj["apiVersion"]).create(body=obj).to_dict()
        obj.pop("status", None)
        if kind == "Service":
            for field in ("clusterIP", "clusterIPs"):
                obj.get("spec", {}).pop(field, None)
        return self.resource(kind, obj["apiVersion"]).create(body=obj, namespace=namespace) \
            .to_dict()

    def wait_for(self, what: str, condition, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} did not happen within {timeout} s")
            time.sleep(0.3)


def _die_with_parent() -> None:
    """In the child: SIGTERM when the test process dies, so no component outlives it."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _clean(obj: dict) -> dict:
    obj = copy.deepcopy(obj)
    for field in _SERVER_FIELDS:
        obj["metadata"].pop(field, None)
    return obj
