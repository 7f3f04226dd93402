"""List, then watch, one kind of object; keep them in a store; say when the store changed.

The loop client-go's reflector runs: list (paged) and replace the store with what came; watch
from the list's resourceVersion with bookmarks, applying ADDED / MODIFIED / DELETED and taking
each event's (and each BOOKMARK's) resourceVersion as the point to resume from; when the server
ends a watch (its timeout) or the connection is cut, watch again from there; on 410 Gone the
resourceVersion is too old: list again. Errors back off (0.5 s doubling to 30 s, with jitter);
a 403 is logged once, naming the RBAC verb and resource the service account lacks, and retried
every 30 s; an outage is logged when it starts and when it ends. While the API cannot be
reached the store keeps what it had, so wslb keeps serving the last good configuration.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import Any

from wslb.controller.kube import Expired, Forbidden, Kube, KubeError, Resource, Unavailable

log = logging.getLogger("wslb.controller")

Key = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped objects

BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
FORBIDDEN_RETRY = 30.0


def key_of(obj: dict[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def _rv(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


class Informer:
    def __init__(
        self,
        kube: Kube,
        resource: Resource,
        on_change: Callable[[Informer], None],
        namespace: str | None = None,
        field_selector: str | None = None,
        watch_timeout: int = 300,
    ) -> None:
        self.kube = kube
        self.resource = resource
        self.namespace = namespace
        self.field_selector = field_selector
        self.on_change = on_change
        self.watch_timeout = watch_timeout
        self.store: dict[Key, dict[str, Any]] = {}
        self.synced = asyncio.Event()
        self.resource_version = ""
        self.lists = 0  # how many times it listed (the first, then one per 410)
        self.delay = BACKOFF_FIRST
        self._failing: str | None = None
        self._forbidden: set[str] = set()

    @property
    def name(self) -> str:
        where = f" in {self.namespace}" if self.namespace else ""
        sel = f" ({self.field_selector})" if self.field_selector else ""
        return f"{self.resource.plural}{where}{sel}"

    async def run(self) -> None:
        self.delay = BACKOFF_FIRST
        need_list = True
        while True:
            verb = "list" if need_list else "watch"
            try:
                if need_list:
                    await self._list()
                    need_list = False
                await self._watch()
                self._recovered()  # a watch that ended normally: at once again
            except Expired:
                log.info(
                    "%s: resourceVersion %s expired; listing again",
                    self.name,
                    self.resource_version,
                )
                need_list = True
                self._recovered()
                await asyncio.sleep(BACKOFF_FIRST * random.random())
            except Forbidden as exc:
                self._say_forbidden(verb, exc)
                await asyncio.sleep(FORBIDDEN_RETRY * (0.8 + 0.4 * random.random()))
            except (Unavailable, KubeError) as exc:
                if self._failing is None:
                    log.warning(
                        "Kubernetes API: cannot %s %s: %s; serving the last configuration, "
                        "retrying with backoff",
                        verb,
                        self.name,
                        exc,
                    )
                self._failing = str(exc)
                await self._back_off()
            except Exception:  # a malformed answer: said, then as any other error
                log.exception("Kubernetes API: %s failed", self.name)
                await self._back_off()

    async def _back_off(self) -> None:
        await asyncio.sleep(self.delay * (0.8 + 0.4 * random.random()))
        self.delay = min(self.delay * 2, BACKOFF_MAX)

    def _recovered(self) -> None:
        self.delay = BACKOFF_FIRST
        if self._failing is not None:
            log.warning("Kubernetes API: %s reachable again", self.name)
            self._failing = None
        self._forbidden.clear()

    def _say_forbidden(self, verb: str, exc: Forbidden) -> None:
        if verb in self._forbidden:
            return
        self._forbidden.add(verb)
        group = self.resource.group or '""'
        scope = f"namespace {self.namespace}" if self.namespace else "the cluster scope"
        log.error(
            "RBAC: the service account may not %s %s (API group %s) at %s: grant the verb "
            '"%s" on "%s"; retrying every %.0fs (%s)',
            verb,
            self.resource.plural,
            group,
            scope,
            verb,
            self.resource.plural,
            FORBIDDEN_RETRY,
            exc.message,
        )

    async def _list(self) -> None:
        items, rv = await self.kube.list(self.resource, self.namespace, self.field_selector)
        self.lists += 1
        fresh = {key_of(o): o for o in items}
        changed = {k: _rv(o) for k, o in fresh.items()} != {
            k: _rv(o) for k, o in self.store.items()
        }
        self.store = fresh
        self.resource_version = rv
        first = not self.synced.is_set()
        self.synced.set()
        if changed or first:
            self.on_change(self)

    async def _watch(self) -> None:
        async for kind, obj in self.kube.watch(
            self.resource,
            self.resource_version,
            self.namespace,
            self.field_selector,
            self.watch_timeout,
        ):
            self._recovered()
            rv = _rv(obj)
            if rv:
                self.resource_version = rv
            if kind == "BOOKMARK":
                continue
            obj.setdefault("kind", self.resource.kind)
            obj.setdefault("apiVersion", self.resource.api_version)
            key = key_of(obj)
            if kind == "DELETED":
                if self.store.pop(key, None) is None:
                    continue
            elif kind in ("ADDED", "MODIFIED"):
                self.store[key] = obj
            else:
                continue
            self.on_change(self)
