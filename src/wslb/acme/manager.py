"""Keeps every ACME certificate of the configuration issued, fresh and served.

Each worker runs one manager. For each certificate it loads what the storage holds and serves
it; when there is none, or when a third of its lifetime is left (``renew_fraction``), it orders
one, but only while it holds the certificate's lock in the storage: the other workers (and
replicas sharing the storage) see the lock held and wait for the new certificate to appear.
A failed order is logged, counted and retried with backoff (``retry_first`` doubling up to
``retry_max``); the certificate in service, if any, keeps serving meanwhile. A new
certificate is swapped in for new handshakes only: connections already open are untouched.

Until a host has a certificate a self-signed one serves it, as before ACME.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import ssl
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

from wslb.acme import client
from wslb.acme.alpn import ACME_TLS_1, offers_acme_tls
from wslb.acme.storage import Storage, StoredCertificate
from wslb.config.model import AcmeCertificateSpec, AcmeSpec

log = logging.getLogger("wslb.acme")
_CLIENT_HELLO = ssl._TLSMessageType.CLIENT_HELLO  # type: ignore[attr-defined]
WAIT_FOR_OTHER = 2.0  # seconds between looks at the storage while another process orders
HOOK_POLL = 0.25  # seconds between looks for pending TLS-ALPN-01 challenges

ContextFactory = Callable[[bytes, bytes, tuple[str, ...]], ssl.SSLContext]


@dataclass
class Served:
    cert: StoredCertificate
    contexts: dict[tuple[str, ...], ssl.SSLContext] = field(default_factory=dict)


class AcmeManager:
    def __init__(self, spec: AcmeSpec, on_event: Callable[[str, str, str], None] | None = None):
        self.spec = spec
        self.storage = Storage(spec.storage)
        self.certs = {c.key: c for c in spec.all_certificates()}
        self.by_host: dict[str, str] = {}  # host -> certificate name
        self.served: dict[str, Served] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.on_event = on_event  # (certificate, kind, result): counted in /metrics
        self._challenge_contexts: dict[str, tuple[float, ssl.SSLContext]] = {}
        self._hello_contexts: weakref.WeakSet[ssl.SSLContext] = weakref.WeakSet()
        self._hooked = False
        self._index()

    def _index(self) -> None:
        self.by_host = {h: c.key for c in self.certs.values() for h in c.hosts}

    # ------------------------------------------------------------------ serving
    def hosts_waiting(self) -> list[str]:
        """Hosts that have no certificate yet (a self-signed one serves them)."""
        return sorted(h for h, name in self.by_host.items() if name not in self.served)

    def load_stored(self) -> None:
        """Serve what the storage already holds (at start: no order for those)."""
        for name, spec in self.certs.items():
            stored = self.storage.load_certificate(name)
            if stored is not None and set(spec.hosts) <= set(stored.hosts):
                self._serve(name, stored)

    def _serve(self, name: str, stored: StoredCertificate) -> None:
        was = self.served.get(name)
        if was is not None and was.cert.stamp == stored.stamp:
            return
        self.served[name] = Served(stored)
        log.info(
            "ACME certificate %s (serial %x, until %s) serves %s",
            name,
            stored.serial,
            stored.not_after.isoformat(timespec="seconds"),
            ", ".join(stored.hosts),
        )

    def context_for(
        self, host: str, key: tuple[str, ...], make: ContextFactory
    ) -> ssl.SSLContext | None:
        """The context serving ``host``'s certificate with a listener's settings ``key``
        (made by ``make(chain, key, alpn)`` once per certificate and listener)."""
        name = self.by_host.get(host)
        if name is None:
            _, _, parent = host.partition(".")
            name = self.by_host.get("*." + parent)
        served = self.served.get(name) if name is not None else None
        if served is None:
            return None
        ctx = served.contexts.get(key)
        if ctx is None:
            ctx = served.contexts[key] = make(served.cert.fullchain_pem, served.cert.key_pem, key)
        return ctx

    def challenge_context(self, host: str, make: ContextFactory) -> ssl.SSLContext | None:
        """The TLS-ALPN-01 validation context for ``host`` while its challenge is pending."""
        path = self.storage.tls_alpn01_path(host)
        try:
            stamp = path.stat().st_mtime
            pem = path.read_bytes()
        except (OSError, ValueError):
            return None
        cached = self._challenge_contexts.get(host)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        ctx = make(pem, pem, (ACME_TLS_1.decode(),))
        self._challenge_contexts[host] = (stamp, ctx)
        return ctx

    def watch_hellos(self, ctx: ssl.SSLContext) -> None:
        """A listener context whose handshakes are checked for acme-tls/1 while a TLS-ALPN-01
        challenge is pending (the hook costs a Python call per TLS record, so it is installed
        only then: ``_hook_challenges``)."""
        self._hello_contexts.add(ctx)
        if self._hooked:
            ctx._msg_callback = _seen_hello  # type: ignore[attr-defined]

    def _set_hook(self, on: bool) -> None:
        if on == self._hooked:
            return
        self._hooked = on
        for ctx in list(self._hello_contexts):
            ctx._msg_callback = _seen_hello if on else None  # type: ignore[attr-defined]

    async def _hook_challenges(self) -> None:
        """Every worker installs the hook while any process has a TLS-ALPN-01 challenge
        pending in the storage (the ordering process waits HOOK_DELAY before answering)."""
        while True:
            self._set_hook(self.storage.tls_alpn01_pending(self.spec.order_timeout + 60))
            await asyncio.sleep(HOOK_POLL)

    @staticmethod
    def asks_for_challenge(conn: object) -> bool:
        return bool(getattr(conn, "_wslb_acme_tls", False))

    # ------------------------------------------------------------------ ordering
    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            self.storage.prepare()
        except OSError as exc:
            log.error(
                "ACME storage %s is not usable (%s): no certificate will be ordered; "
                "self-signed ones serve",
                self.storage.root,
                exc.strerror or exc,
            )
            return
        self.load_stored()
        for name, spec in self.certs.items():
            if name not in self.tasks:
                self.tasks[name] = loop.create_task(self._keep(spec))
        if "" not in self.tasks:
            self.tasks[""] = loop.create_task(self._hook_challenges())

    def update(self, spec: AcmeSpec, loop: asyncio.AbstractEventLoop) -> None:
        """A reload: certificates added start, removed ones stop being served."""
        self.spec = spec
        self.storage = Storage(spec.storage)
        certs = {c.key: c for c in spec.all_certificates()}
        for name in set(self.certs) - set(certs) - {""}:
            task = self.tasks.pop(name, None)
            if task is not None:
                task.cancel()
            self.served.pop(name, None)
        for name, c in certs.items():
            if name in self.certs and self.certs[name] != c:
                task = self.tasks.pop(name, None)
                if task is not None:
                    task.cancel()
        self.certs = certs
        self._index()
        self.start(loop)

    def stop(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        self.tasks.clear()

    def _due(self, name: str, spec: AcmeCertificateSpec) -> float:
        """Seconds until ``name`` needs an order (0: now): when it has no certificate, or a
        third of its life is left, and no failed attempt asked to wait (any process's)."""
        stored = self.storage.load_certificate(name)
        due = 0.0
        if stored is not None and set(spec.hosts) <= set(stored.hosts):
            self._serve(name, stored)
            now = datetime.datetime.now(datetime.UTC)
            due = max(0.0, (stored.renew_at(self.spec.renew_fraction) - now).total_seconds())
        retry = self.storage.retry_state(name, spec.hosts)
        if due == 0 and retry is not None:
            due = max(0.0, retry[0] - time.time())
        return due

    async def _keep(self, spec: AcmeCertificateSpec) -> None:
        name = spec.key
        while True:
            try:
                wait = await self._step(name, spec)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the storage failing (permissions, disk full): go on
                log.warning("ACME %s: %s; trying again in %gs", name, exc, self.spec.retry_first)
                wait = self.spec.retry_first
            await asyncio.sleep(wait)

    async def _step(self, name: str, spec: AcmeCertificateSpec) -> float:
        """Order when due and this process holds the lock; the seconds to wait next."""
        due = self._due(name, spec)
        if due > 0:
            return min(due, self.spec.check_interval)
        renewal = name in self.served
        kind = "renewal" if renewal else "order"
        with self.storage.order_lock(name) as mine:
            if not mine:
                return WAIT_FOR_OTHER  # another process orders: its result will appear
            if self._due(name, spec) > 0:  # done (or failed and waiting) meanwhile
                return 0.0
            try:
                await self._order(name, spec, kind)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # whatever the CA, the network or the acme package raise: said, counted, and
                # retried with a backoff every process honours; what serves keeps serving
                last = self.storage.retry_state(name, spec.hosts)
                delay = self.spec.retry_first
                if last is not None:
                    delay = min(last[1] * 2, self.spec.retry_max)
                self.storage.set_retry(name, spec.hosts, time.time() + delay, delay)
                self._event(name, kind, "failed")
                log.warning(
                    "ACME %s of %s failed: %s; retry in %gs",
                    kind,
                    name,
                    str(exc) or type(exc).__name__,
                    delay,
                )
                return delay
            return 0.0

    async def _order(self, name: str, spec: AcmeCertificateSpec, kind: str) -> None:
        log.info(
            "ACME %s of %s for %s at %s", kind, name, ", ".join(spec.hosts), self.spec.directory
        )
        storage, acme_spec = self.storage, self.spec  # a reload may replace them meanwhile
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(None, client.order, acme_spec, storage, spec.hosts)
        try:
            chain, key = await asyncio.shield(future)
        except asyncio.CancelledError:
            # A reload or a shutdown: the order goes on in its thread. Keep the lock until it
            # ends (so that no other process starts a second one) and keep what it gets.
            deadline = loop.time() + acme_spec.order_timeout + 30
            while not future.done() and loop.time() < deadline:
                with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                    await asyncio.wait_for(asyncio.shield(future), deadline - loop.time())
            if future.done() and future.exception() is None:
                chain, key = future.result()
                storage.save_certificate(name, spec.hosts, chain, key)
                storage.clear_retry(name)
                log.info("ACME %s of %s finished after its task was stopped", kind, name)
            elif future.done():
                log.warning("ACME %s of %s failed: %s", kind, name, future.exception())
            raise
        storage.save_certificate(name, spec.hosts, chain, key)
        storage.clear_retry(name)
        self._event(name, kind, "ok")
        stored = self.storage.load_certificate(name)
        if stored is not None:
            self._serve(name, stored)

    def _event(self, name: str, kind: str, result: str) -> None:
        if self.on_event is not None:
            self.on_event(name, kind, result)


def _seen_hello(
    conn: object, direction: str, _v: object, _ct: object, mt: object, data: bytes
) -> None:
    """SSLContext._msg_callback: mark a handshake whose ClientHello offers acme-tls/1 (called
    before the SNI callback picks a certificate)."""
    if direction == "read" and mt == _CLIENT_HELLO and offers_acme_tls(data):
        conn._wslb_acme_tls = True  # type: ignore[attr-defined]
