"""The proxies in front of the API (``OPENI2V_FORWARDED_ALLOW_IPS``), whose X-Forwarded-Host and
X-Forwarded-Proto say where a request was addressed, for the URLs the API hands out."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

# What Host and X-Forwarded-Host may say: a host name or an IP (IPv6 in brackets), and a port 1-65535;
# X-Forwarded-Proto.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PORT = r"(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
FORWARDED_HOST = re.compile(rf"(?:{_LABEL}(?:\.{_LABEL})*\.?|\[[0-9A-Fa-f:.]{{2,45}}\])(?::{_PORT})?")
FORWARDED_PROTO = re.compile(r"https?", re.IGNORECASE)


@dataclass(frozen=True)
class Proxies:
    """``OPENI2V_FORWARDED_ALLOW_IPS``: the peers whose X-Forwarded-Host and -Proto are believed."""

    any: bool = False
    ips: frozenset[str] = frozenset()
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def parse(cls, spec: str) -> "Proxies":
        """Comma-separated IPs and CIDRs, or "*"; a malformed entry is a ValueError naming it."""
        entries = [part.strip() for part in spec.split(",") if part.strip()]
        if "*" in entries:
            return cls(any=True)
        ips, networks = set(), []
        for entry in entries:
            try:
                net = ipaddress.ip_network(entry)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address, a CIDR with no host "
                                 "bits set (like 10.0.0.0/8), or *") from None
            if net.num_addresses == 1:
                ips.add(str(net.network_address))
            else:
                networks.append(net)
        return cls(False, frozenset(ips), tuple(networks))

    def trust(self, client: tuple[str, int] | None) -> bool:
        """Whether the direct peer is one of them (an exact IP is a set lookup; a CIDR parses the peer)."""
        if self.any or client is None:
            return self.any
        if client[0] in self.ips:
            return True
        if not self.networks:
            return False
        try:
            peer = ipaddress.ip_address(client[0])
        except ValueError:
            return False
        return any(peer in net for net in self.networks)


def forwarded(value: str | None, form: re.Pattern) -> str | None:
    """The nearest proxy's value of an X-Forwarded-* header (the last of a list) when it is well formed."""
    if not value:
        return None
    last = value.rsplit(",", 1)[-1].strip()
    return last if len(last) <= 260 and form.fullmatch(last) else None


def host(value: str | None) -> str | None:
    """A Host header when it is a host and a port, nothing more (no path, query or user); else None."""
    return value if value and len(value) <= 260 and FORWARDED_HOST.fullmatch(value) else None
