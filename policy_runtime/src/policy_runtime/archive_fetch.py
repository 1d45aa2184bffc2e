"""Fetching an upstream policy's code archive from its URL, once, when it is published.

Upstream AIOS policy records carry in ``code`` the URL of a zip or tar archive (uploaded
to the assets registry). This runtime fetches it only from the hosts of
AIOS_POLICY_ARCHIVE_ALLOWED_HOSTS (empty by default: every URL is refused), at most
AIOS_POLICY_ARCHIVE_MAX_BYTES within AIOS_POLICY_ARCHIVE_TIMEOUT_SECONDS, never following a
redirect and never through a proxy. The host name is resolved once and the connection is
made to that address (a name cannot resolve to another address between the check and the
connection); link-local and cloud metadata addresses are refused whatever the list says.
The archive is then unpacked in memory by ``package.source_from_archive`` and only its
source is stored: evaluating the policy never fetches anything.
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlparse

import httpx

from policy_runtime.executors.allowlist import AllowList, UrlNotAllowed, refused_address
from policy_runtime.package import ArchiveError, ArchiveTooLarge

SETTING = "AIOS_POLICY_ARCHIVE_ALLOWED_HOSTS"


class ArchiveFetchError(ArchiveError):
    """The code URL cannot be fetched; the message says why and what to do."""


class ArchiveFetchTooLarge(ArchiveTooLarge):
    """The archive at the code URL is larger than AIOS_POLICY_ARCHIVE_MAX_BYTES."""


@dataclass(frozen=True)
class FetchedArchive:
    url: str
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def _address(host: str, port: int, url: str) -> str:
    """The one address ``host`` is reached at; every address it resolves to is checked."""
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        return str(literal)  # checked against the list's networks by AllowList
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as exc:
        raise ArchiveFetchError(f"code URL {url!r}: {host} does not resolve ({exc})") from None
    addresses = []
    for info in infos:
        try:
            addresses.append(ipaddress.ip_address(str(info[4][0]).split("%")[0]))
        except ValueError:
            continue
    if not addresses:
        raise ArchiveFetchError(f"code URL {url!r}: {host} resolves to no address")
    for address in addresses:
        reason = refused_address(address)
        if reason:
            raise ArchiveFetchError(
                f"code URL {url!r}: {host} resolves to {address}, {reason}; refused"
            )
    return str(addresses[0])


def check_url(url: str, allowed_hosts: list[str]) -> None:
    """ArchiveFetchError unless ``url`` is an http(s) URL on an allowed host."""
    parsed = urlparse(url.strip())
    if parsed.scheme not in ("http", "https"):
        raise ArchiveFetchError(
            f"code URL {url!r}: only http and https URLs are fetched; or send the archive "
            "itself, base64, as code_archive"
        )
    if parsed.username is not None or parsed.password is not None:
        raise ArchiveFetchError(f"code URL {url!r}: credentials in the URL are not accepted")
    if not allowed_hosts:
        raise ArchiveFetchError(
            f"code is the URL {url!r}, and {SETTING} is empty: no code URL is fetched. "
            f"Add the assets registry's host to {SETTING}, or send the archive itself, "
            "base64, as code_archive"
        )
    try:
        AllowList(allowed_hosts, setting=SETTING).check_url(url.strip())
    except UrlNotAllowed as exc:
        raise ArchiveFetchError(f"code {exc}") from None


def fetch_archive(
    url: str,
    *,
    allowed_hosts: list[str],
    max_bytes: int,
    timeout: float,
    verify: ssl.SSLContext | bool = True,
) -> FetchedArchive:
    """The bytes at ``url``: one GET, no redirect, at most ``max_bytes`` in ``timeout`` s.

    An https URL's certificate is checked against its host name (sent as SNI) although
    the connection goes to the address checked here; ``verify`` is httpx's (the system's
    CA bundle by default). Blocking: call it from a worker thread.
    """
    url = url.strip()
    check_url(url, allowed_hosts)
    parsed = urlparse(url)
    host = (parsed.hostname or "").rstrip(".")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    address = _address(host, port, url)
    pinned = f"[{address}]" if ":" in address else address
    target = parsed._replace(netloc=f"{pinned}:{port}").geturl()
    extensions = {"sni_hostname": host} if parsed.scheme == "https" else {}
    headers = {
        "Host": parsed.netloc.rsplit("@", 1)[-1],
        "Accept": "*/*",
        "Accept-Encoding": "identity",
    }
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    size = 0
    try:
        with (
            httpx.Client(
                follow_redirects=False,
                trust_env=False,
                timeout=httpx.Timeout(timeout),
                verify=verify,
            ) as client,
            client.stream("GET", target, headers=headers, extensions=extensions) as response,
        ):
            if response.is_redirect or 300 <= response.status_code < 400:
                where = response.headers.get("location", "")
                raise ArchiveFetchError(
                    f"code URL {url!r} answered a redirect ({response.status_code}"
                    f"{' to ' + repr(where[:200]) if where else ''}); redirects are not "
                    "followed: give the archive's own URL"
                )
            if response.status_code != 200:
                raise ArchiveFetchError(
                    f"code URL {url!r} answered {response.status_code}, not the archive"
                )
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > max_bytes:
                raise ArchiveFetchTooLarge(
                    f"the archive at code URL {url!r} is {declared} bytes; the limit is "
                    f"{max_bytes} (AIOS_POLICY_ARCHIVE_MAX_BYTES)"
                )
            for chunk in response.iter_raw():  # as it arrives: the deadline is checked
                size += len(chunk)
                if size > max_bytes:
                    raise ArchiveFetchTooLarge(
                        f"the archive at code URL {url!r} is larger than {max_bytes} bytes "
                        "(AIOS_POLICY_ARCHIVE_MAX_BYTES)"
                    )
                chunks.append(chunk)
                if time.monotonic() > deadline:
                    raise httpx.ReadTimeout("deadline")
    except httpx.TimeoutException:
        raise ArchiveFetchError(
            f"code URL {url!r} did not deliver the archive within {timeout:g} s "
            "(AIOS_POLICY_ARCHIVE_TIMEOUT_SECONDS)"
        ) from None
    except httpx.HTTPError as exc:
        raise ArchiveFetchError(f"code URL {url!r} cannot be fetched: {exc}") from None
    if time.monotonic() > deadline:
        raise ArchiveFetchError(
            f"code URL {url!r} did not deliver the archive within {timeout:g} s "
            "(AIOS_POLICY_ARCHIVE_TIMEOUT_SECONDS)"
        )
    return FetchedArchive(url, b"".join(chunks))
