"""Host and path matching, built once per configuration generation.

Semantics follow the Kubernetes Ingress API (and so ingress-nginx):

* hosts: an exact host beats a wildcard; ``*.example.com`` matches exactly one label
  (``a.example.com``, not ``a.b.example.com`` nor ``example.com``); routes without a host match
  any host that no host rule claims. The host that matched decides; its paths are tried and a miss
  is a 404 (the request does not fall through to another host's rules).
* paths: an ``exact`` path beats any prefix; among prefixes the longest wins. A prefix matches
  element-wise: ``/foo`` matches ``/foo``, ``/foo/`` and ``/foo/bar`` but not ``/foobar``;
  a trailing slash in the prefix is ignored; ``/`` matches everything.

Matching does dictionary lookups plus one scan of a host's prefixes, longest first.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from wslb.caches import remember

T = TypeVar("T")
HOST_CACHE = 4096  # Host values remembered per table (cleared when full)


@dataclass
class _PathTable(Generic[T]):
    exact: dict[str, T] = field(default_factory=dict)
    prefixes: list[tuple[str, T]] = field(default_factory=list)  # normalised, longest first
    catch_all: T | None = None

    def add(self, path: str, path_type: str, target: T) -> None:
        if path_type == "exact":
            self.exact.setdefault(path, target)
            return
        norm = path.rstrip("/")
        if not norm:
            if self.catch_all is None:
                self.catch_all = target
            return
        if all(p != norm for p, _ in self.prefixes):
            self.prefixes.append((norm, target))
            self.prefixes.sort(key=lambda item: len(item[0]), reverse=True)

    def match(self, path: str) -> T | None:
        hit = self.exact.get(path)
        if hit is not None:
            return hit
        for prefix, target in self.prefixes:
            if path.startswith(prefix) and (len(path) == len(prefix) or path[len(prefix)] == "/"):
                return target
        return self.catch_all


@dataclass(frozen=True)
class RouteEntry(Generic[T]):
    host: str | None
    path: str
    path_type: str
    target: T


class RouteTable(Generic[T]):
    def __init__(self, entries: Iterable[RouteEntry[T]]) -> None:
        self._exact: dict[str, _PathTable[T]] = {}
        self._wildcard: dict[str, _PathTable[T]] = {}
        self._any: _PathTable[T] | None = None
        for e in entries:
            if e.host is None:
                if self._any is None:
                    self._any = _PathTable()
                table = self._any
            elif e.host.startswith("*."):
                table = self._wildcard.setdefault(e.host[2:], _PathTable())
            else:
                table = self._exact.setdefault(e.host, _PathTable())
            table.add(e.path, e.path_type, e.target)
        self.empty = not (self._exact or self._wildcard or self._any)
        self._hosts: dict[str | None, _PathTable[T] | None] = {}

    def match(self, host: str | None, path: str) -> T | None:
        """``host`` as the client sent it (any case, maybe with a port)."""
        try:
            table = self._hosts[host]
        except KeyError:
            table = remember(self._hosts, host, self._host_table(host), HOST_CACHE)
        if table is None:
            return None
        return table.match(path)

    def _host_table(self, host: str | None) -> _PathTable[T] | None:
        if host:
            name = normalise_host(host)
            table = self._exact.get(name)
            if table is None and self._wildcard:
                dot = name.find(".")
                if dot > 0:
                    table = self._wildcard.get(name[dot + 1 :])
            if table is not None:
                return table
        return self._any


def normalise_host(host: str) -> str:
    """Lowercase, without port, without a trailing dot; IPv6 literals keep their brackets."""
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1].lower() if end > 0 else host.lower()
    colon = host.rfind(":")
    if colon >= 0:
        host = host[:colon]
    return host.rstrip(".").lower()
