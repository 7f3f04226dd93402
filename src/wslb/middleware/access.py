"""Source-address access lists: ``allow`` (when given, only these) and ``deny``."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from wslb.caches import remember

VERDICTS = 10_001  # client addresses whose verdict is remembered (then all forgotten)
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class AccessList:
    def __init__(self, allow: Iterable[str], deny: Iterable[str]) -> None:
        self.allow: tuple[Network, ...] = tuple(
            ipaddress.ip_network(c, strict=False) for c in allow
        )
        self.deny: tuple[Network, ...] = tuple(ipaddress.ip_network(c, strict=False) for c in deny)
        self._cache: dict[str, bool] = {}

    def __bool__(self) -> bool:
        return bool(self.allow or self.deny)

    def permits(self, ip: str) -> bool:
        hit = self._cache.get(ip)
        if hit is not None:
            return hit
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        ok = not any(addr in n for n in self.deny) and (
            not self.allow or any(addr in n for n in self.allow)
        )
        return remember(self._cache, ip, ok, VERDICTS)
