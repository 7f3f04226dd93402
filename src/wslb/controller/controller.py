"""Controller mode: the Kubernetes API as wslb's configuration source.

Informers (informer.py) keep Ingresses, IngressClasses, Services, EndpointSlices, TLS Secrets
and the controller's ConfigMap. Any change marks the state dirty; after ``debounce`` seconds
without another change (at most ``max_delay`` after the first), the objects are translated into
a wslb Config by the same translator as manifest files (config/kubernetes/translate.py), and a
Config that differs from the last one is published (to the workers, by the caller). A burst
such as a ``kubectl apply`` of 20 objects is therefore one publication.

An object the translator refuses is left out and the rest is translated again without it, so
one bad Ingress, Secret or Service never stops the others: its problems are logged, and (by the
Lease holder) recorded as a Warning Event on the object. Objects are checked against the
Kubernetes schema first, as files are.

The replicas agree on affinity cookies and Engine.IO tags because they share one key: the
Secret named by ``--affinity-secret``, created by the Lease holder when it is missing and read
by every replica. The Lease holder also writes ``.status.loadBalancer`` of every Ingress it
serves (ingress-nginx's ``--publish-service`` / ``--publish-status-address``) and clears it on
Ingresses it no longer serves.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from wslb.config.kubernetes.objects import KObject
from wslb.config.kubernetes.schema import shape_errors
from wslb.config.kubernetes.translate import ManifestOptions, translate
from wslb.config.model import Config
from wslb.config.source import Locator
from wslb.controller.classes import IngressClasses
from wslb.controller.informer import Informer, Key
from wslb.controller.kube import (
    RESOURCES,
    Conflict,
    Forbidden,
    Kube,
    KubeError,
    NotFound,
    Unavailable,
)
from wslb.controller.lease import LeaderElector
from wslb.errors import ConfigError, ConfigIssue
from wslb.server.state.discovery import is_ip

log = logging.getLogger("wslb.controller")

SECRET_KEY = "secret"  # the data key of the affinity Secret


def split_ref(ref: str, default_namespace: str) -> tuple[str, str]:
    ns, sep, name = ref.partition("/")
    return (ns, name) if sep else (default_namespace, ns)


@dataclass
class ControllerOptions:
    manifest: ManifestOptions = field(default_factory=ManifestOptions)
    kubeconfig: str | None = None
    ingress_class: str = "nginx"
    controller_class: str = "wslb.io/ingress-controller"
    watch_without_class: bool = False
    watch_namespace: str | None = None
    configmap: str | None = None  # NS/NAME
    publish_service: str | None = None  # NS/NAME
    publish_status_address: tuple[str, ...] = ()
    update_status: bool = True  # ingress-nginx's --update-status
    affinity_secret: str = "wslb-affinity"  # [NS/]NAME, in the controller's namespace
    election_id: str = "wslb-leader"
    identity: str = ""
    debounce: float = 0.5
    max_delay: float = 2.0
    watch_timeout: int = 300
    lease_duration: float = 15.0
    lease_retry: float = 2.0


def api_object(obj: dict[str, Any]) -> tuple[KObject | None, list[ConfigIssue]]:
    """A KObject for an object the API served, checked as a file's objects are; problems
    name the object and the key (there is no line)."""
    meta = obj.get("metadata") or {}
    kind = str(obj.get("kind") or "")
    ns = str(meta.get("namespace") or "")
    name = str(meta.get("name") or "")
    loc = Locator(f"{kind} {ns}/{name}" if ns else f"{kind} {name}")
    problems = [loc.issue(path, f"{kind} {name}: {msg}") for path, msg in shape_errors(kind, obj)]
    if problems:
        return None, problems
    annotations = meta.get("annotations") or {}
    return (
        KObject(
            kind=kind,
            api_version=str(obj.get("apiVersion") or ""),
            name=name,
            namespace=ns or "default",
            body=obj,
            loc=loc,
            annotations={str(k): "" if v is None else str(v) for k, v in annotations.items()},
        ),
        [],
    )


@dataclass
class Built:
    config: Config | None
    issues: list[ConfigIssue]
    served: set[Key]  # Ingresses translated into the config
    refused: dict[str, KObject]  # loc.source -> an object left out for its errors


def build(
    stores: dict[str, dict[Key, dict[str, Any]]],
    classes: IngressClasses,
    options: ManifestOptions,
    configmap: tuple[str, str] | None,
    publish_service: tuple[str, str] | None,
) -> Built:
    """The objects of the informers' stores -> a Config; objects with errors left out."""
    objects: list[KObject] = []
    issues: list[ConfigIssue] = []
    by_source: dict[str, KObject] = {}
    refused: dict[str, KObject] = {}
    for kind, store in stores.items():
        for (ns, name), raw in sorted(store.items()):
            if kind == "IngressClass":
                continue
            if kind == "ConfigMap" and (ns, name) != configmap:
                continue
            if kind == "Ingress" and not classes.serves(raw):
                continue
            obj, problems = api_object(raw)
            issues += problems
            if obj is None:
                src = problems[0].source if problems else f"{kind} {ns}/{name}"
                refused[src] = KObject(kind, "", name, ns, raw, Locator(src))
                continue
            if obj.loc.source in by_source:  # the publish Service, listed twice
                continue
            by_source[obj.loc.source] = obj
            objects.append(obj)
    config: Config | None = None
    for _ in range(len(objects) + 1):
        try:
            config, more = translate(objects, options)
            issues += more
            break
        except ConfigError as exc:
            bad = {i.source for i in exc.issues if i.severity == "error"} & set(by_source)
            if not bad:  # not any one object's fault: keep the last configuration
                issues += exc.issues
                break
            for i in exc.issues:
                if i.source in bad:
                    issues.append(i)
            for src in bad:
                refused[src] = by_source.pop(src)
            objects = [o for o in objects if o.loc.source not in bad]
    served = (
        {(o.namespace, o.name) for o in objects if o.kind == "Ingress"}
        if config is not None
        else set()
    )
    return Built(config, issues, served, refused)


class Controller:
    def __init__(self, options: ControllerOptions, publish: Callable[[Config], None]) -> None:
        self.opt = options
        self.publish = publish
        self.kube: Kube | None = None
        self.informers: dict[str, Informer] = {}
        self.dirty = asyncio.Event()
        self.elector: LeaderElector | None = None
        self.published: Config | None = None
        self.secret: str | None = None
        self.reported: set[tuple[str, str, str]] = set()  # (source, key, message) logged
        self.evented: set[tuple[str, str, str]] = set()  # (uid, resourceVersion, message)
        self.status_written: set[Key] = set()
        self.last: Built | None = None
        self.tasks: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------------ start
    async def _connect(self) -> Kube:
        delay = 0.5
        while True:
            try:
                return await Kube.connect(self.opt.kubeconfig)
            except Unavailable as exc:
                log.warning("Kubernetes API: %s; retrying in %.0fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    def _informers(self, kube: Kube) -> dict[str, Informer]:
        ns = self.opt.watch_namespace
        out: dict[str, Informer] = {}

        def add(
            key: str, kind: str, namespace: str | None = None, selector: str | None = None
        ) -> None:
            out[key] = Informer(
                kube,
                RESOURCES[kind],
                self._changed,
                namespace,
                selector,
                self.opt.watch_timeout,
            )

        add("Ingress", "Ingress", ns)
        add("IngressClass", "IngressClass")
        add("Service", "Service", ns)
        add("EndpointSlice", "EndpointSlice", ns)
        add("Secret", "Secret", ns, "type=kubernetes.io/tls")
        if self.opt.configmap:
            cm_ns, cm_name = split_ref(self.opt.configmap, kube.namespace)
            add("ConfigMap", "ConfigMap", cm_ns, f"metadata.name={cm_name}")
        if self.opt.publish_service:
            ps_ns, ps_name = split_ref(self.opt.publish_service, kube.namespace)
            if ns is not None and ps_ns != ns:
                add("PublishService", "Service", ps_ns, f"metadata.name={ps_name}")
        return out

    def _changed(self, _informer: Informer) -> None:
        self.dirty.set()

    def _retry_later(self, delay: float = 5.0) -> None:
        """A write that failed (status, Event): sync again in a while."""
        asyncio.get_running_loop().call_later(delay, self.dirty.set)

    async def run(self) -> None:
        kube = self.kube = await self._connect()
        loop = asyncio.get_running_loop()
        self.informers = self._informers(kube)
        self.elector = LeaderElector(
            kube,
            kube.namespace,
            self.opt.election_id,
            self.opt.identity,
            self.opt.lease_duration,
            self.opt.lease_retry,
            lambda _leading: self.dirty.set(),
        )
        self.tasks = [loop.create_task(i.run()) for i in self.informers.values()]
        self.tasks.append(loop.create_task(self.elector.run()))
        try:
            self.secret = await self._affinity_secret()
            for informer in self.informers.values():
                await informer.synced.wait()
            log.info(
                "controller: synced %s",
                ", ".join(f"{len(i.store)} {i.resource.plural}" for i in self.informers.values()),
            )
            while True:
                await self.dirty.wait()
                await self._settle()
                self.dirty.clear()
                try:
                    await self.sync()
                except Exception:  # a bug must not stop the watching: the last config stays
                    log.exception("controller: sync failed; the running configuration stays")
        finally:
            for t in self.tasks:
                t.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            await kube.close()

    async def _settle(self) -> None:
        """Wait until nothing changed for ``debounce`` seconds, or ``max_delay`` passed."""
        loop = asyncio.get_running_loop()
        end = loop.time() + self.opt.max_delay
        while True:
            self.dirty.clear()
            left = min(self.opt.debounce, end - loop.time())
            if left <= 0:
                return
            try:
                async with asyncio.timeout(left):
                    await self.dirty.wait()
            except TimeoutError:
                return

    async def _affinity_secret(self) -> str:
        """The key every replica signs affinity cookies and Engine.IO tags with."""
        assert self.kube is not None and self.elector is not None
        kube = self.kube
        ns, name = split_ref(self.opt.affinity_secret, kube.namespace)
        said: set[str] = set()
        while True:
            try:
                secret = await kube.get_secret(ns, name)
                raw = (secret.get("data") or {}).get(SECRET_KEY)
                try:
                    value = base64.b64decode(str(raw), validate=True).decode() if raw else ""
                except (binascii.Error, UnicodeDecodeError):
                    value = ""
                if value:
                    log.info("controller: affinity key from Secret %s/%s", ns, name)
                    return value
                what = f"Secret {ns}/{name} has no data.{SECRET_KEY}"
            except NotFound:
                if self.elector.leading:
                    body = {
                        "apiVersion": "v1",
                        "kind": "Secret",
                        "type": "Opaque",
                        "metadata": {
                            "name": name,
                            "namespace": ns,
                            "labels": {"app.kubernetes.io/managed-by": "wslb"},
                        },
                        "data": {
                            SECRET_KEY: base64.b64encode(secrets.token_hex(32).encode()).decode()
                        },
                    }
                    try:
                        await kube.create_secret(ns, body)
                        log.info("controller: created the affinity Secret %s/%s", ns, name)
                    except Conflict:
                        pass
                    continue
                what = f"waiting for the Lease holder to create Secret {ns}/{name}"
            except Forbidden as exc:
                what = f"RBAC: {exc.message}"
            except (Unavailable, KubeError) as exc:
                what = f"cannot read Secret {ns}/{name}: {exc}"
            if what not in said:
                said.add(what)
                log.warning("controller: %s", what)
            await asyncio.sleep(self.opt.lease_retry / 2)

    # ------------------------------------------------------------------ one sync
    def stores(self) -> dict[str, dict[Key, dict[str, Any]]]:
        out = {k: i.store for k, i in self.informers.items()}
        if "PublishService" in out:
            out["Service"] = {**out["Service"], **out.pop("PublishService")}
        return out

    async def sync(self) -> None:
        assert self.kube is not None
        stores = self.stores()
        classes = IngressClasses(
            stores.get("IngressClass", {}),
            self.opt.ingress_class,
            self.opt.controller_class,
            self.opt.watch_without_class,
        )
        namespace = self.kube.namespace
        configmap = split_ref(self.opt.configmap, namespace) if self.opt.configmap else None
        publish = (
            split_ref(self.opt.publish_service, namespace) if self.opt.publish_service else None
        )
        options = ManifestOptions(
            **{
                **self.opt.manifest.__dict__,
                "secret": self.secret,
                "ingress_class": None,
                "from_api": True,
                "lb_service": "/".join(publish) if publish else None,
                "configmap": "/".join(configmap) if configmap else None,
            }
        )
        built = build(stores, classes, options, configmap, publish)
        self.last = built
        self._report(built)
        if built.config is not None and built.config != self.published:
            self.published = built.config
            self.publish(built.config)
        if self.elector is not None and self.elector.leading:
            await self._events(built)
            if self.opt.update_status:
                await self._status(built, stores, publish)

    def _report(self, built: Built) -> None:
        seen: set[tuple[str, str, str]] = set()
        for issue in built.issues:
            if issue.severity == "info":
                continue
            key = (issue.source, issue.key, issue.message)
            seen.add(key)
            if key in self.reported:
                continue
            left_out = " (left out; the rest is served)" if issue.source in built.refused else ""
            (log.error if issue.severity == "error" else log.warning)(
                "controller: %s%s", issue, left_out
            )
        self.reported = seen

    async def _events(self, built: Built) -> None:
        assert self.kube is not None
        for issue in built.issues:
            obj = built.refused.get(issue.source)
            if obj is None or issue.severity != "error":
                continue
            meta = obj.body.get("metadata") or {}
            key = (str(meta.get("uid")), str(meta.get("resourceVersion")), str(issue))
            if key in self.evented:
                continue
            now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            body = {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"generateName": f"{obj.name}.", "namespace": obj.namespace},
                "involvedObject": {
                    "apiVersion": obj.body.get("apiVersion"),
                    "kind": obj.body.get("kind") or obj.kind,
                    "name": obj.name,
                    "namespace": obj.namespace,
                    "uid": meta.get("uid"),
                    "resourceVersion": meta.get("resourceVersion"),
                },
                "reason": "Rejected",
                "message": f"wslb: {issue.key + ': ' if issue.key else ''}{issue.message}"[:1024],
                "type": "Warning",
                "source": {"component": "wslb-controller"},
                "reportingComponent": self.opt.controller_class,
                "reportingInstance": self.opt.identity,
                "firstTimestamp": now,
                "lastTimestamp": now,
                "count": 1,
            }
            try:
                await self.kube.create_event(obj.namespace, body)
                self.evented.add(key)
            except (Unavailable, KubeError) as exc:
                log.debug("controller: cannot record an Event on %s: %s", issue.source, exc)
                self._retry_later()

    def _addresses(
        self, stores: dict[str, dict[Key, dict[str, Any]]], publish: tuple[str, str] | None
    ) -> list[dict[str, str]]:
        if self.opt.publish_status_address:
            return [
                {"ip": a} if is_ip(a) else {"hostname": a} for a in self.opt.publish_status_address
            ]
        if publish is None:
            return []
        svc = stores.get("Service", {}).get(publish)
        lb = ((svc or {}).get("status") or {}).get("loadBalancer") or {}
        out = []
        for entry in lb.get("ingress") or []:
            picked = {k: str(entry[k]) for k in ("ip", "hostname") if entry.get(k)}
            if picked:
                out.append(picked)
        return out

    async def _status(
        self,
        built: Built,
        stores: dict[str, dict[Key, dict[str, Any]]],
        publish: tuple[str, str] | None,
    ) -> None:
        assert self.kube is not None
        if built.config is None:
            return
        want = self._addresses(stores, publish)
        for key, ing in list(stores.get("Ingress", {}).items()):  # the store changes meanwhile
            have = ((ing.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
            if key in built.served:
                target = want
                if not want:
                    continue
            elif key in self.status_written or (want and have == want):
                target = []
            else:
                continue
            if have == target:
                if target:
                    self.status_written.add(key)
                continue
            try:
                await self.kube.patch_ingress_status(
                    key[0], key[1], {"loadBalancer": {"ingress": target}}
                )
            except (Unavailable, KubeError) as exc:
                log.warning("controller: cannot write the status of Ingress %s/%s: %s", *key, exc)
                self._retry_later()
                continue
            if target:
                self.status_written.add(key)
            else:
                self.status_written.discard(key)
            log.info(
                "controller: Ingress %s/%s status %s",
                *key,
                ", ".join(a.get("ip") or a.get("hostname", "") for a in target) or "cleared",
            )
