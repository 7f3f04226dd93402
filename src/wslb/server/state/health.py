"""Active health checks: one loop per endpoint per worker.

``tcp``: a connect within ``timeout``. ``http``/``https``: ``GET path`` with ``Host`` (the
configured one, else the endpoint address) and ``Connection: close``; a status from 200 to 399 is
healthy. ``healthy_threshold`` consecutive successes bring an endpoint back, ``unhealthy_threshold``
consecutive failures take it out. Health checks are not the data path, so they use asyncio
streams for brevity.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl

from wslb.balancer.endpoints import EndpointState
from wslb.config.model import UpstreamTLSSpec
from wslb.server.core.tls import client_context
from wslb.server.state.backend import BackendState

log = logging.getLogger("wslb.health")


async def probe(backend: BackendState, ep: EndpointState) -> tuple[bool, str]:
    spec = backend.spec.health
    ctx: ssl.SSLContext | None = None
    if spec.type == "https":
        ctx = backend.ssl_context or client_context(UpstreamTLSSpec())
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(spec.timeout):
            reader, writer = await asyncio.open_connection(
                ep.host,
                spec.port or ep.port,
                ssl=ctx,
                server_hostname=(backend.server_hostname or ep.host) if ctx else None,
            )
            if spec.type == "tcp":
                return True, "connected"
            host = spec.host or ep.address
            writer.write(
                f"GET {spec.path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: wslb-health-check\r\n"
                "Connection: close\r\nAccept: */*\r\n\r\n".encode("latin-1")
            )
            line = await reader.readline()
    except TimeoutError:
        return False, f"no answer within {spec.timeout:g}s"
    except (OSError, ssl.SSLError, asyncio.IncompleteReadError) as exc:
        return False, f"{type(exc).__name__}: {exc}"
    finally:
        if writer is not None:
            writer.close()
    parts = line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return False, "not an HTTP response"
    status = int(parts[1])
    return 200 <= status < 400, f"status {status}"


class HealthChecker:
    def __init__(self, backends: list[BackendState]) -> None:
        self.backends = [b for b in backends if b.spec.health.enabled]
        self.tasks: list[asyncio.Task[None]] = []
        self.by_endpoint: dict[EndpointState, asyncio.Task[None]] = {}

    def start(self) -> None:
        for backend in self.backends:
            self.sync(backend)

    def sync(self, backend: BackendState) -> None:
        """Check exactly the backend's current endpoints (after an endpoint-set change)."""
        if backend not in self.backends:
            return
        loop = asyncio.get_running_loop()
        wanted = set(backend.endpoints)
        for ep, task in list(self.by_endpoint.items()):
            if ep not in wanted and task.get_name() == backend.name:
                task.cancel()
                del self.by_endpoint[ep]
        for ep in backend.endpoints:
            if ep not in self.by_endpoint:
                task = loop.create_task(self._run(backend, ep), name=backend.name)
                self.by_endpoint[ep] = task
                self.tasks.append(task)

    async def _run(self, backend: BackendState, ep: EndpointState) -> None:
        spec = backend.spec.health
        # Spread the first checks so that workers and endpoints do not probe in lockstep.
        await asyncio.sleep(random.uniform(0, min(spec.interval, 1.0)))
        while True:
            ok, detail = await probe(backend, ep)
            if ep.record_check(ok, spec.healthy_threshold, spec.unhealthy_threshold):
                backend.health_changed()
                if ep.healthy:
                    log.warning(
                        "backend %s: endpoint %s is healthy again (%s)",
                        backend.name,
                        ep.address,
                        detail,
                    )
                else:
                    log.warning(
                        "backend %s: endpoint %s is unhealthy (%s)",
                        backend.name,
                        ep.address,
                        detail,
                    )
            await asyncio.sleep(spec.interval)

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        for t in self.tasks:
            try:
                await t
            except asyncio.CancelledError:
                pass
        self.tasks = []
