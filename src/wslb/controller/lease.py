"""Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection does it.

One replica holds the Lease (``holderIdentity``) and renews it every ``retry`` seconds; the
others read it and take it over only once ``renewTime + leaseDurationSeconds`` has passed. A
write carries the resourceVersion it read, so when two replicas race the API server keeps one
write and answers the other 409 Conflict. Only the holder writes Ingress statuses and creates
the shared affinity Secret. Losing the API loses the lead once the lease would have expired,
so that two replicas never both believe they lead for longer than the skew between them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from wslb.controller.kube import Conflict, Kube, KubeError, NotFound, Unavailable

log = logging.getLogger("wslb.controller")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _micro(t: dt.datetime) -> str:
    """A MicroTime as the API writes it."""
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


class LeaderElector:
    def __init__(
        self,
        kube: Kube,
        namespace: str,
        name: str,
        identity: str,
        duration: float = 15.0,
        retry: float = 2.0,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.duration = duration
        self.retry = retry
        self.on_change = on_change
        self.leading = False
        self._valid_until = 0.0  # loop time until which our lead is certain

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                held = await self._try()
                if held:  # renewed: certain for one more lease duration
                    self._valid_until = loop.time() + self.duration
            except (Unavailable, KubeError) as exc:
                log.warning("lease %s/%s: %s", self.namespace, self.name, exc)
                held = self.leading and loop.time() < self._valid_until
            self._set(held)
            await asyncio.sleep(self.retry)

    def _set(self, leading: bool) -> None:
        if leading == self.leading:
            return
        self.leading = leading
        log.info(
            "lease %s/%s: %s",
            self.namespace,
            self.name,
            "this replica leads" if leading else "this replica no longer leads",
        )
        if self.on_change is not None:
            self.on_change(leading)

    def _spec(self, transitions: int, acquired: str | None) -> dict[str, Any]:
        now = _micro(_now())
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.duration),
            "acquireTime": acquired or now,
            "renewTime": now,
            "leaseTransitions": transitions,
        }

    async def _try(self) -> bool:
        try:
            lease = await self.kube.get_lease(self.namespace, self.name)
        except NotFound:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec(0, None),
            }
            try:
                await self.kube.create_lease(self.namespace, body)
            except Conflict:
                return False  # another replica created it first
            return True
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity")
        mine = holder == self.identity
        if not mine and holder:
            renewed = _parse(spec.get("renewTime"))
            duration = float(spec.get("leaseDurationSeconds") or self.duration)
            if renewed is not None and _now() < renewed + dt.timedelta(seconds=duration):
                return False
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if mine else 1)
        lease["spec"] = self._spec(transitions, spec.get("acquireTime") if mine else None)
        try:
            await self.kube.replace_lease(self.namespace, self.name, lease)
        except Conflict:
            return False
        return True
