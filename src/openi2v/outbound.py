"""The guard for every outbound request: strangers name the URLs we fetch (``image``,
``last_image``, ``audio``) and the URLs we POST webhooks to, so the server must not become a
proxy into its own network.

A URL is parsed once, by httpx, the parser that then sends it. Its host is resolved once and
every address judged: refused when it lies in ``NOT_PUBLIC`` or is an IPv6 form that carries
such an IPv4 address (mapped, compatible, NAT64, 6to4, Teredo), unless ``OPENI2V_FETCH_ALLOW``
names the host or covers the address (``OPENI2V_FETCH_ALLOW_PRIVATE=true`` allows all). The
request then goes to the checked address itself, with the URL's Host header and TLS server
name, so a name that answers one address to the check and another to the connection (DNS
rebinding) gains nothing. A redirect is a new request: the caller pins each hop.

A refusal tells the stranger which host was refused, never what it resolved to; the log has
the detail.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import httpx

from openi2v.domain.inputs import check_url
from openi2v.errors import InvalidInput, MediaUnavailable

if TYPE_CHECKING:
    from openi2v.config import Settings

log = logging.getLogger("openi2v.outbound")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]  # (host, port) -> addresses, as getaddrinfo answers


def _table(*rows: tuple[str, str]) -> tuple[tuple[Network, str], ...]:
    return tuple((ipaddress.ip_network(net), why) for net, why in rows)


# What a stranger's URL may not reach (IANA's special-purpose address registries), written out
# rather than read from ``ip.is_global``, whose answers change between Python versions.
NOT_PUBLIC = _table(
    ("0.0.0.0/8", "this network (0.0.0.0 is unspecified)"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared address space, CGNAT (100.100.100.200 is a cloud metadata service)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local (169.254.169.254 is the cloud metadata service)"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.2.0/24", "documentation (TEST-NET-1)"),
    ("192.88.99.0/24", "6to4 relay anycast"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation (TEST-NET-2)"),
    ("203.0.113.0/24", "documentation (TEST-NET-3)"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved (255.255.255.255 is broadcast)"),
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("64:ff9b:1::/48", "local-use NAT64"),
    ("100::/64", "discard-only"),
    ("2001::/23", "IETF protocol assignments (benchmarking, ORCHID)"),
    ("2001:db8::/32", "documentation"),
    ("3fff::/20", "documentation"),
    ("5f00::/16", "segment routing (SRv6)"),
    ("fc00::/7", "unique local (fd00:ec2::254 is the cloud metadata service)"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("ff00::/8", "multicast"),
)
GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")  # any other IPv6 address is reserved
# IPv6 prefixes whose last 32 bits are an IPv4 address: mapped, translated, compatible, NAT64.
IPV4_IN_LOW_BITS = tuple(map(ipaddress.IPv6Network, ("::ffff:0:0/96", "::ffff:0:0:0/96", "::/96", "64:ff9b::/96")))
DEFAULT_PORTS = {"http": 80, "https": 443}
# For the clients that send pinned requests: a pooled connection is keyed by IP and port, so it may
# have been opened (and its certificate checked) for another host name on the same address.
NO_KEEPALIVE = httpx.Limits(max_keepalive_connections=0)
HOST_NAME = re.compile(r"(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*")


def refusal(ip: Address) -> str | None:
    """Why ``ip`` is not a public address, or None when it is."""
    inner = embedded_ipv4(ip) if ip.version == 6 else ()
    if inner:  # judged by the IPv4 address it carries
        return next((f"{why}, inside {ip}" for why in map(refusal, inner) if why), None)
    for net, why in NOT_PUBLIC:
        if ip in net:
            return f"{why}: {net}"
    return "reserved IPv6 (outside 2000::/3)" if ip.version == 6 and ip not in GLOBAL_UNICAST else None


def embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 addresses an IPv6 address carries: Teredo's server and client, 6to4's, or the
    last 32 bits of the mapped, compatible and NAT64 forms. Empty for a plain IPv6 address."""
    if ip.teredo:
        return ip.teredo
    if ip.sixtofour:
        return (ip.sixtofour,)
    if any(ip in net for net in IPV4_IN_LOW_BITS):
        return (ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF),)
    return ()


def resolve_host(host: str, port: int) -> list[str]:
    """Every address ``host`` has, as getaddrinfo answers (numeric spellings such as
    ``2130706433`` and ``0x7f.1`` included: they are judged by the address they mean)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


@dataclass(frozen=True)
class AllowList:
    """``OPENI2V_FETCH_ALLOW``: host names, IPs and CIDRs reachable although not public."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, spec: str) -> "AllowList":
        """Comma-separated entries; a malformed one is a ValueError naming it."""
        hosts: set[str] = set()
        networks: list[Network] = []
        for entry in filter(None, (part.strip().lower() for part in spec.split(","))):
            try:
                networks.append(ipaddress.ip_network(entry))
            except ValueError:
                hosts.add(_host_name(entry))
        return cls(frozenset(hosts), tuple(networks))

    def admits(self, host: str, ip: Address) -> bool:
        return host in self.hosts or any(ip in net for net in self.networks)


def _host_name(entry: str) -> str:
    name = entry.removesuffix(".")
    if "/" in name or ":" in name or not HOST_NAME.fullmatch(name):
        raise ValueError(f"OPENI2V_FETCH_ALLOW: {entry!r} is not a host name (ASCII; xn-- for an international "
                         "one), an IP address, or a CIDR with no host bits set (like 10.0.0.0/8)")
    try:
        socket.inet_aton(name)
    except OSError:
        return name
    raise ValueError(f"OPENI2V_FETCH_ALLOW: {entry!r} is a numeric IPv4 spelling; write it as a.b.c.d")


@dataclass(frozen=True)
class OutboundGuard:
    """Checks a URL and builds its request pinned to the checked address."""

    allow: AllowList = AllowList()
    allow_all: bool = False  # OPENI2V_FETCH_ALLOW_PRIVATE
    resolve: Resolver = resolve_host  # a test double answers what a name server would

    @classmethod
    def from_settings(cls, settings: "Settings") -> "OutboundGuard":
        return cls(AllowList.parse(settings.fetch_allow), settings.fetch_allow_private)

    def request(self, client: httpx.Client | httpx.AsyncClient, method: str, field: str, url: str,
                headers: dict[str, str] | None = None, content: bytes | None = None) -> httpx.Request:
        """``client.build_request`` for ``url``, addressed to the one IP that was checked.

        Resolves the host (blocking: call it from a thread in async code); raises
        MediaUnavailable naming ``field`` when the URL is malformed or its host is refused."""
        target = _parse(field, url)
        host = target.raw_host.decode("ascii")
        ip = self.checked_address(field, host, target.port or DEFAULT_PORTS[target.scheme])
        return client.build_request(
            method, target.copy_with(host=str(ip)), content=content,
            headers={**(headers or {}), "host": target.netloc.decode("ascii")},
            extensions={"sni_hostname": host})  # the certificate is checked against the name, not the IP

    def checked_address(self, field: str, host: str, port: int) -> Address:
        """The address to connect to: the first of ``host``'s, once all of them passed."""
        addresses = self._addresses(field, host, port)
        for ip in addresses:
            why = None if self.allow_all else refusal(ip)
            if why and not self.allow.admits(host.lower().removesuffix("."), ip):
                log.info("%s: refused %s (%s is %s)", field, host, ip, why)
                raise MediaUnavailable(f"{field}: the host {host} is not a public address "
                                       "(set OPENI2V_FETCH_ALLOW to allow it)")
        return addresses[0]

    def _addresses(self, field: str, host: str, port: int) -> list[Address]:
        try:
            return [ipaddress.ip_address(host)]
        except ValueError:
            pass  # a name (or a numeric spelling only the resolver reads)
        try:
            found = [ipaddress.ip_address(a) for a in self.resolve(host, port)]
        except (OSError, UnicodeError, ValueError) as exc:
            log.info("%s: could not resolve %s: %s", field, host, exc)
            found = []
        if not found:
            raise MediaUnavailable(f"{field}: could not resolve host {host}")
        return found


def _parse(field: str, url: str) -> httpx.URL:
    """The URL as httpx will send it, under the submit's rules (``inputs.check_url``): a redirect's
    target, or a URL stored before those rules, may break them."""
    try:
        return check_url(field, url)
    except InvalidInput as exc:
        raise MediaUnavailable(exc.message) from exc
