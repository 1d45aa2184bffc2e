"""Where executors may live: the AIOS_EXECUTOR_ALLOWED_HOSTS allow-list.

Registering an executor makes this runtime send requests to its URL, so the URL is
checked against the operator's allow-list of host names and IP networks. Link-local
addresses (cloud metadata services live there) and the known metadata addresses are
refused whatever the list says, both when the executor is registered and, for host
names, each time it is called (what a name resolves to can change).
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlparse

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Metadata services outside the link-local ranges, and names that reach them.
_METADATA_ADDRESSES = frozenset({
    ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
    ipaddress.ip_address("fd00:ec2::254"),  # AWS over IPv6
    ipaddress.ip_address("192.0.0.192"),  # Oracle Cloud (legacy)
})
_METADATA_NAMES = frozenset({"metadata", "metadata.google.internal", "instance-data"})


class UrlNotAllowed(ValueError):
    """The URL is outside the allow-list, or points at a refused address."""


def _refused_address(address: IPAddress) -> str | None:
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        address = mapped
    if address.is_link_local:
        return "a link-local address (where cloud metadata services answer)"
    if address in _METADATA_ADDRESSES:
        return "a cloud metadata address"
    if address.is_unspecified or address.is_multicast:
        return "not a host address"
    return None


def refused_address(address: IPAddress) -> str | None:
    """Why ``address`` may never be contacted (link-local, metadata, ...); None if it may."""
    return _refused_address(address)


class AllowList:
    def __init__(self, entries: list[str], setting: str = "AIOS_EXECUTOR_ALLOWED_HOSTS") -> None:
        # The setting the list comes from, named in every refusal.
        self.setting = setting
        self.names: set[str] = set()
        self.networks: list[IPNetwork] = []
        for entry in entries:
            entry = entry.strip().lower()
            if not entry:
                continue
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self.names.add(entry.rstrip("."))

    def describe(self) -> str:
        items = sorted(self.names) + [str(n) for n in self.networks]
        return ", ".join(items) or f"(empty: set {self.setting})"

    def check_url(self, url: str) -> None:
        """UrlNotAllowed unless the URL's host is allowed (registration time)."""
        host = (urlparse(url).hostname or "").lower().rstrip(".")
        if not host:
            raise UrlNotAllowed(f"url {url!r} names no host")
        if host in _METADATA_NAMES:
            raise UrlNotAllowed(f"url {url!r}: {host} is a cloud metadata service")
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            address = None
        if address is not None:
            refused = _refused_address(address)
            if refused:
                raise UrlNotAllowed(f"url {url!r}: {host} is {refused}")
            if not any(address in network for network in self.networks):
                raise UrlNotAllowed(
                    f"url {url!r}: {host} is not in {self.setting} "
                    f"({self.describe()})"
                )
            return
        if not self._name_allowed(host):
            raise UrlNotAllowed(
                f"url {url!r}: {host} is not in {self.setting} ({self.describe()})"
            )

    def _name_allowed(self, host: str) -> bool:
        # ".example.org" allows every name under example.org.
        return host in self.names or any(
            n.startswith(".") and host.endswith(n) for n in self.names
        )


def check_resolved(url: str) -> None:
    """UrlNotAllowed when the URL's host name resolves to a refused address (call time).

    A name that does not resolve is left to the HTTP client to report."""
    host = urlparse(url).hostname or ""
    try:
        ipaddress.ip_address(host)
        return  # checked when it was registered
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return
    for info in infos:
        try:
            address = ipaddress.ip_address(info[4][0].split("%")[0])
        except ValueError:
            continue
        refused = _refused_address(address)
        if refused:
            raise UrlNotAllowed(f"executor host {host} resolves to {address}: {refused}")
