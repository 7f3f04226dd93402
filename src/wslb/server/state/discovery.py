"""Endpoints from DNS: names are resolved every ``discovery.interval`` and each address becomes
an endpoint (a headless Service's name gives one address per pod). Endpoints that stay keep
their state (health, counts, pooled connections); new ones are added, gone ones leave."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Callable

from wslb.config.model import split_host_port
from wslb.server.state.backend import BackendState

log = logging.getLogger("wslb.discovery")


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def resolve(backend: BackendState) -> list[tuple[str, int, int]]:
    loop = asyncio.get_running_loop()
    out: list[tuple[str, int, int]] = []
    for spec in backend.spec.endpoints:
        host, port = split_host_port(spec.address)
        if is_ip(host):
            out.append((host, port, spec.weight))
            continue
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        for addr in sorted({info[4][0] for info in infos}):
            out.append((str(addr), port, spec.weight))
    return out


class Discovery:
    def __init__(
        self,
        backends: list[BackendState],
        on_change: Callable[[BackendState], None] | None = None,
    ) -> None:
        self.backends = [b for b in backends if b.spec.discovery is not None]
        self.tasks: list[asyncio.Task[None]] = []
        self.on_change = on_change

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.tasks = [loop.create_task(self._run(b)) for b in self.backends]

    async def _run(self, backend: BackendState) -> None:
        assert backend.spec.discovery is not None
        interval = backend.spec.discovery.interval
        failing = False
        while True:
            try:
                found = await resolve(backend)
            except OSError as exc:
                if not failing:
                    log.warning("backend %s: cannot resolve its endpoints: %s", backend.name, exc)
                failing = True
            else:
                if failing:
                    log.warning("backend %s: endpoints resolve again", backend.name)
                failing = False
                if found and backend.set_endpoints(found):
                    log.info(
                        "backend %s: endpoints now %s",
                        backend.name,
                        ", ".join(ep.address for ep in backend.endpoints),
                    )
                    if self.on_change is not None:
                        self.on_change(backend)
            await asyncio.sleep(interval)

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks = []
