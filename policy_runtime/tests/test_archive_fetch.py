"""Fetching an upstream policy's code archive from its URL: only from allowed hosts, once,
bounded in size and time, without redirects, never from link-local or metadata addresses.

The archives come from a local HTTP server (upstream_archives.Assets); each test checks
what the runtime answered and what the server was asked.
"""

from __future__ import annotations

import http.server
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import upstream_archives
from conftest import RuntimeServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from upstream_archives import MAX_BYTES, TIMEOUT_SECONDS, Assets

from policy_runtime import archive_fetch
from policy_runtime.archive_fetch import ArchiveFetchError, ArchiveFetchTooLarge, fetch_archive

assets = upstream_archives.assets
fetching_server = upstream_archives.fetching_server
SETTING = "AIOS_POLICY_ARCHIVE_ALLOWED_HOSTS"


@pytest.fixture()
def client(fetching_server: RuntimeServer) -> Iterator[httpx.Client]:
    with fetching_server.client() as api:
        yield api


def record(code: str, **fields: Any) -> dict:
    name = f"aiosv1.policies.fetch.p{secrets.token_hex(4)}"
    return {
        "name": name,
        "version": "v0.0.1",
        "release_tag": "stable",
        "code": code,
        "tags": "a",
        "metadata": {},
        "functionality_data": {},
        "policy_parameters": {"min": 1},
        **fields,
    }


def requests_for(path: str) -> int:
    return sum(1 for seen in Assets.seen if seen["path"].split("?", 1)[0] == path)


def refused(client: httpx.Client, code: str, status: int, needle: str) -> str:
    body = record(code)
    response = client.post("/policy", json=body)
    assert response.status_code == status, response.text
    assert response.json()["success"] is False
    message = response.json()["message"]
    assert needle in message, message
    uri = f"{body['name']}:v0.0.1-stable"
    assert client.get(f"/policy/{uri}").status_code == 404, "nothing was published"
    return message


# -- through the runtime ----------------------------------------------------------------
def test_the_archive_is_fetched_once_and_evaluation_never_fetches(
    client: httpx.Client, assets: str
) -> None:
    before = requests_for("/policy.tar.xz")
    body = record(f"{assets}/policy.tar.xz?once={secrets.token_hex(3)}")
    created = client.post("/policy", json=body)
    assert created.status_code == 200 and created.json()["success"] is True, created.text
    uri = created.json()["data"]["policy_rule_uri"]
    assert requests_for("/policy.tar.xz") == before + 1
    again = client.post("/policy", json=body)
    assert again.status_code == 200 and again.json()["data"]["created"] is False
    assert requests_for("/policy.tar.xz") == before + 1, "published from it already"
    for gpus in (0, 1, 5):
        decided = client.post(f"/policies/{uri}/eval", json={"input_data": {"gpus": gpus}})
        assert decided.json()["result"] == {"allowed": gpus >= 1}
    # Updating what describes it, with the same URL, fetches nothing either.
    read = client.get(f"/policy/{uri}").json()["data"]
    updated = client.put(f"/policy/{uri}", json={**read, "description": "documented"})
    assert updated.status_code == 200, updated.text
    assert requests_for("/policy.tar.xz") == before + 1
    stored = client.get(f"/policies/{uri}").json()["upstream"]
    assert stored["code"] == body["code"] and len(stored["archive_sha256"]) == 64


def test_an_empty_allow_list_refuses_every_url(api: httpx.Client, assets: str) -> None:
    """The default: no host is allowed, and the answer names the setting."""
    before = len(Assets.seen)
    message = refused(api, f"{assets}/policy.zip", 422, SETTING)
    assert "empty" in message and "code_archive" in message
    assert len(Assets.seen) == before, "nothing was fetched"


@pytest.mark.parametrize("host", ["localhost", "127.0.0.2", "assets.example.org"])
def test_a_host_outside_the_allow_list_is_refused(
    client: httpx.Client, assets: str, host: str
) -> None:
    port = assets.rsplit(":", 1)[1]
    before = len(Assets.seen)
    message = refused(client, f"http://{host}:{port}/policy.zip", 422, SETTING)
    assert host in message
    assert len(Assets.seen) == before, "nothing was fetched"


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://metadata.google.internal/computeMetadata/v1/", "metadata"),
        ("file:///etc/passwd", "only http and https"),
        ("ftp://127.0.0.1/policy.zip", "only http and https"),
        ("gopher://127.0.0.1:70/_x", "only http and https"),
    ],
)
def test_metadata_addresses_and_other_schemes_are_refused(
    client: httpx.Client, url: str, needle: str
) -> None:
    refused(client, url, 422, needle)


def test_credentials_in_the_url_are_refused(client: httpx.Client, assets: str) -> None:
    with_user = assets.replace("http://", "http://user:secret@")
    message = refused(client, f"{with_user}/policy.zip", 422, "credentials")
    assert "secret" not in message.replace(with_user, "")


def test_a_redirect_is_not_followed(client: httpx.Client, assets: str) -> None:
    before = requests_for("/policy.zip")
    refused(client, f"{assets}/redirect", 422, "redirect")
    assert requests_for("/policy.zip") == before, "the redirect's target was not asked"


@pytest.mark.parametrize("path", ["/oversized", "/oversized-undeclared"])
def test_an_oversized_archive_is_refused(client: httpx.Client, assets: str, path: str) -> None:
    refused(client, f"{assets}{path}", 413, "AIOS_POLICY_ARCHIVE_MAX_BYTES")


@pytest.mark.parametrize("path", ["/slow", "/stalled"])
def test_a_slow_archive_is_refused_in_time(client: httpx.Client, assets: str, path: str) -> None:
    started = time.monotonic()
    refused(client, f"{assets}{path}", 422, "AIOS_POLICY_ARCHIVE_TIMEOUT_SECONDS")
    assert time.monotonic() - started < TIMEOUT_SECONDS * 2 + 2


@pytest.mark.parametrize(
    ("path", "status", "needle"),
    [
        ("/not-an-archive.zip", 422, "neither a zip nor a tar"),
        ("/no-function.zip", 422, "has no code/function.py"),
        ("/bomb.zip", 413, "code limit"),
        ("/missing.zip", 422, "answered 404"),
    ],
)
def test_what_is_not_a_code_archive_is_refused(
    client: httpx.Client, assets: str, path: str, status: int, needle: str
) -> None:
    message = refused(client, f"{assets}{path}", status, needle)
    assert f"{assets}{path}" in message


def test_an_update_with_a_new_url_is_checked_like_a_publish(
    client: httpx.Client, assets: str
) -> None:
    created = client.post("/policy", json=record(f"{assets}/policy.zip"))
    uri = created.json()["data"]["policy_rule_uri"]
    read = client.get(f"/policy/{uri}").json()["data"]
    for code, status, needle in (
        (f"{assets}/redirect", 422, "redirect"),
        (f"{assets}/oversized", 413, "AIOS_POLICY_ARCHIVE_MAX_BYTES"),
        ("http://169.254.169.254/x.zip", 422, "link-local"),
    ):
        response = client.put(f"/policy/{uri}", json={**read, "code": code})
        assert response.status_code == status, response.text
        assert needle in response.json()["message"]
    assert client.get(f"/policy/{uri}").json()["data"]["code"] == f"{assets}/policy.zip"


# -- the fetcher itself -------------------------------------------------------------------
def _resolving_to(monkeypatch: pytest.MonkeyPatch, address: str) -> None:
    def fake(host: str, port: Any, *args: Any, **kwargs: Any) -> list:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        return [(family, socket.SOCK_STREAM, 6, "", (address, port or 0))]

    monkeypatch.setattr(archive_fetch.socket, "getaddrinfo", fake)


def test_a_name_is_fetched_from_the_one_address_it_was_checked_at(
    monkeypatch: pytest.MonkeyPatch, assets: str
) -> None:
    port = assets.rsplit(":", 1)[1]
    _resolving_to(monkeypatch, "127.0.0.1")
    fetched = fetch_archive(
        f"http://assets.registry.test:{port}/policy.zip",
        allowed_hosts=[".registry.test"],
        max_bytes=MAX_BYTES,
        timeout=TIMEOUT_SECONDS,
    )
    assert fetched.data == Assets.files["/policy.zip"]
    assert Assets.seen[-1] == {"path": "/policy.zip", "host": f"assets.registry.test:{port}"}


@pytest.mark.parametrize(
    "address", ["169.254.169.254", "fe80::1", "100.100.100.200", "::ffff:169.254.169.254"]
)
def test_a_name_resolving_to_a_metadata_address_is_refused(
    monkeypatch: pytest.MonkeyPatch, address: str
) -> None:
    _resolving_to(monkeypatch, address)
    before = len(Assets.seen)
    with pytest.raises(ArchiveFetchError, match="resolves to"):
        fetch_archive(
            "http://assets.registry.test/policy.zip",
            allowed_hosts=["assets.registry.test"],
            max_bytes=MAX_BYTES,
            timeout=TIMEOUT_SECONDS,
        )
    assert len(Assets.seen) == before


def test_link_local_is_refused_even_when_listed() -> None:
    with pytest.raises(ArchiveFetchError, match="link-local"):
        fetch_archive(
            "http://169.254.169.254/latest",
            allowed_hosts=["169.254.0.0/16"],
            max_bytes=MAX_BYTES,
            timeout=TIMEOUT_SECONDS,
        )


def test_the_declared_length_is_refused_before_the_body_is_read(assets: str) -> None:
    with pytest.raises(ArchiveFetchTooLarge, match=str(MAX_BYTES + 1)):
        fetch_archive(
            f"{assets}/oversized",
            allowed_hosts=["127.0.0.1"],
            max_bytes=MAX_BYTES,
            timeout=TIMEOUT_SECONDS,
        )


def test_proxies_from_the_environment_are_not_used(
    monkeypatch: pytest.MonkeyPatch, assets: str
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9")
    fetched = fetch_archive(
        f"{assets}/policy.zip",
        allowed_hosts=["127.0.0.1"],
        max_bytes=MAX_BYTES,
        timeout=TIMEOUT_SECONDS,
    )
    assert fetched.data == Assets.files["/policy.zip"]


# -- https: the certificate is checked against the name, the connection goes to the address
def _self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture(scope="module")
def tls_assets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """The assets stand-in over https, with a certificate for assets.registry.test."""
    cert, key = _self_signed(tmp_path_factory.mktemp("tls"), "assets.registry.test")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Assets)
    httpd.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1], cert
    httpd.shutdown()
    httpd.server_close()


def test_https_checks_the_certificate_of_the_name(
    monkeypatch: pytest.MonkeyPatch, tls_assets: tuple[int, Path]
) -> None:
    port, cert = tls_assets
    _resolving_to(monkeypatch, "127.0.0.1")
    trusted = ssl.create_default_context(cafile=str(cert))
    fetched = fetch_archive(
        f"https://assets.registry.test:{port}/policy.zip",
        allowed_hosts=["assets.registry.test"],
        max_bytes=MAX_BYTES,
        timeout=TIMEOUT_SECONDS,
        verify=trusted,
    )
    assert fetched.data == Assets.files["/policy.zip"]
    # A certificate the client does not trust (the default bundle) is refused.
    with pytest.raises(ArchiveFetchError, match="cannot be fetched"):
        fetch_archive(
            f"https://assets.registry.test:{port}/policy.zip",
            allowed_hosts=["assets.registry.test"],
            max_bytes=MAX_BYTES,
            timeout=TIMEOUT_SECONDS,
        )
    # Nor does the certificate of assets.registry.test pass for another allowed name.
    with pytest.raises(ArchiveFetchError, match="cannot be fetched"):
        fetch_archive(
            f"https://other.registry.test:{port}/policy.zip",
            allowed_hosts=[".registry.test"],
            max_bytes=MAX_BYTES,
            timeout=TIMEOUT_SECONDS,
            verify=trusted,
        )
