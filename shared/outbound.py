"""Where a service may send requests when a user or an operator names the URL (webhooks, providers).

Whoever may set such a URL could otherwise aim the service's signed requests at internal systems:
the cloud metadata endpoint (169.254.169.254), an admin port on localhost, a database on the
private network. A URL is refused when its host is, or resolves to, an address that is not
globally routable: unspecified, loopback, link-local (where cloud metadata lives), multicast,
private (AWS's IPv6 metadata fd00:ec2::254 is one), reserved, or shared (100.64.0.0/10, Alibaba's
metadata). An IPv4-mapped or NAT64 IPv6 address is judged by the IPv4 address it carries.
`OUTBOUND_URL_ALLOWLIST` permits chosen internal targets: hosts, host:port, or CIDRs.

A sender checks again at each send and connects to the very address it checked (`Destination`),
so a name that resolved to a public address when it was saved and resolves to an internal one
later (DNS rebinding) gains nothing.
"""

import asyncio
import socket
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from urllib.parse import urlsplit

IPAddress = IPv4Address | IPv6Address
Resolver = Callable[[str, int], list[IPAddress]]
"""The addresses of a host (for a port); raises `HostUnresolved` when it has none."""

SETTING = "OUTBOUND_URL_ALLOWLIST"
_NAT64 = ip_network("64:ff9b::/96")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class OutboundRefused(ValueError):
    """The URL may not be sent to; the message says why and how to permit it."""


class HostUnresolved(OSError):
    """The URL's host has no address now: perhaps a typo, perhaps DNS is down for a while."""


def system_resolver(host: str, port: int) -> list[IPAddress]:
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise HostUnresolved(f"host {host} does not resolve ({error.strerror})") from error
    return list(dict.fromkeys(ip_address(sockaddr[0]) for *_, sockaddr in found))


def _carried(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv4-mapped or NAT64 IPv6 address reaches; any other address itself."""
    if isinstance(address, IPv6Address):
        if address.ipv4_mapped:
            return address.ipv4_mapped
        if address in _NAT64:
            return IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def internal_kind(address: IPAddress) -> str | None:
    """Why `address` is internal, in words ("a loopback address"); None for a public one."""
    address = _carried(address)
    for kind, internal in (
        ("an unspecified", address.is_unspecified),
        ("a loopback", address.is_loopback),
        ("a link-local", address.is_link_local),
        ("a multicast", address.is_multicast),
        ("a reserved", address.is_reserved),
        ("a private", address.is_private),
        ("a not globally routable", not address.is_global),
    ):
        if internal:
            return f"{kind} address"
    return None


def _literal(host: str) -> IPAddress | None:
    try:
        return ip_address(host)
    except ValueError:
        return None


@dataclass(frozen=True)
class Allowlist:
    """Internal targets an operator permits: a host (any port, by the name in the URL), host:port, or a CIDR."""

    hosts: frozenset[tuple[str, int | None]] = frozenset()
    networks: tuple[IPv4Network | IPv6Network, ...] = ()

    @classmethod
    def parse(cls, text: str) -> "Allowlist":
        """`hooks.internal, 10.1.2.3:8080, [fd00::1]:443, 192.168.0.0/16`; a malformed entry raises ValueError naming it."""
        hosts: set[tuple[str, int | None]] = set()
        networks = []
        for entry in (part.strip() for part in text.split(",")):
            if not entry:
                continue
            if "/" in entry:
                try:
                    networks.append(ip_network(entry, strict=False))
                except ValueError:
                    raise ValueError(f"{SETTING}: {entry!r} is not a CIDR such as 10.0.0.0/8") from None
                continue
            host, port = _host_and_port(entry)
            address = _literal(host)
            if address is not None and port is None:
                networks.append(ip_network(address))
            else:
                hosts.add((str(address) if address else host.lower(), port))
        return cls(frozenset(hosts), tuple(networks))

    def permits(self, host: str, port: int, address: IPAddress) -> bool:
        literal = _literal(host)
        name = str(literal) if literal else host.lower()
        if (name, None) in self.hosts or (name, port) in self.hosts:
            return True
        candidates = {address, _carried(address)}
        return any(c in network for c in candidates for network in self.networks if c.version == network.version)


def _host_and_port(entry: str) -> tuple[str, int | None]:
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        port = rest.removeprefix(":") if rest.startswith(":") else None
        if rest and port is None:
            raise ValueError(f"{SETTING}: {entry!r} is not [IPv6]:port")
    elif entry.count(":") == 1:
        host, port = entry.split(":")
    else:
        host, port = entry, None  # a name, an IPv4 address, or a bare IPv6 address
    if port is None:
        return host, None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{SETTING}: {entry!r} has an invalid port")
    return host, int(port)


@dataclass(frozen=True)
class Destination:
    """Where a checked request goes: `url` names the checked address, and `headers` (Host) and
    `extensions` (the TLS server name, for httpx) keep the host's own name for HTTP and TLS."""

    url: str
    headers: dict[str, str]
    extensions: dict[str, str]


class OutboundPolicy:
    def __init__(self, allowlist: Allowlist | None = None, resolve: Resolver = system_resolver) -> None:
        self._allowlist = allowlist or Allowlist()
        self._resolve = resolve

    def check(self, url: str, what: str = "URL") -> Destination:
        """Raises `OutboundRefused` (naming `what`, the setting or field) or `HostUnresolved`; blocks on DNS."""
        parts = urlsplit(url)
        if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise OutboundRefused(f"{what} must be an http:// or https:// URL with a host")
        try:
            port = parts.port or _DEFAULT_PORTS[parts.scheme]
        except ValueError:
            raise OutboundRefused(f"{what} has an invalid port") from None
        host = parts.hostname
        literal = _literal(host)
        addresses = [literal] if literal else self._resolve(host, port)
        if not addresses:
            raise HostUnresolved(f"host {host} does not resolve")
        for address in addresses:
            kind = internal_kind(address)
            if kind and not self._allowlist.permits(host, port, address):
                judged = f"is {kind}" if literal else f"resolves to {address}, {kind}"
                raise OutboundRefused(f"{what} host {host} {judged}; set {SETTING} to permit it")
        userinfo, _, written = parts.netloc.rpartition("@")
        address = addresses[0]
        pinned = f"[{address}]" if address.version == 6 else str(address)
        netloc = f"{userinfo}@{pinned}:{port}" if userinfo else f"{pinned}:{port}"
        return Destination(
            url=parts._replace(netloc=netloc).geturl(),
            headers={"Host": written},
            extensions={"sni_hostname": host} if parts.scheme == "https" else {},
        )

    async def destination(self, url: str, what: str = "URL") -> Destination:
        """`check`, with DNS off the event loop."""
        return await asyncio.to_thread(self.check, url, what)
