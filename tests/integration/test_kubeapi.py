"""The Kubernetes API stand-in (tests/support/kubeapi.py), through kubernetes_asyncio.

The client is configured from the kubeconfig the stand-in writes, as wslb's controller mode is,
so every call below goes over the real wire protocol.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import kubernetes_validate
import pytest
from kubernetes_asyncio import config, watch
from kubernetes_asyncio.client import (
    ApiClient,
    ApisApi,
    Configuration,
    CoordinationV1Api,
    CoreApi,
    CoreV1Api,
    DiscoveryV1Api,
    EventsV1Api,
    NetworkingV1Api,
    V1Lease,
    V1LeaseSpec,
    V1ObjectMeta,
    VersionApi,
)
from kubernetes_asyncio.client.exceptions import ApiException

from tests.support.kubeapi import K8S_VERSION, KubeAPI
from tests.support.procs import scaled

NS = "shop"
USER = "system:serviceaccount:ingress:wslb"
WAIT = scaled(10.0)  # every wait below is bounded by this


def ingress(name: str, host: str = "app.example.com", **labels: str) -> dict[str, Any]:
    backend = {"service": {"name": "web", "port": {"number": 80}}}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": NS, "labels": labels},
        "spec": {
            "ingressClassName": "wslb",
            "rules": [
                {
                    "host": host,
                    "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend}]},
                }
            ],
        },
    }


def configmap(name: str, value: str = "1", **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": NS, "labels": labels},
        "data": {"value": value},
    }


def status_body(e: ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(e.body)
    assert body["kind"] == "Status" and body["apiVersion"] == "v1", body
    assert body["status"] == "Failure" and body["code"] == e.status, body
    return body


@pytest.fixture
def kube() -> Iterator[KubeAPI]:
    with KubeAPI() as api:
        api.bookmark_interval = 0.2
        yield api


@pytest.fixture
async def client(kube: KubeAPI, tmp_path: Path) -> AsyncIterator[ApiClient]:
    path = kube.write_kubeconfig(tmp_path / "kubeconfig", namespace=NS)
    cfg = Configuration()
    await config.load_kube_config(config_file=str(path), client_configuration=cfg)
    async with ApiClient(configuration=cfg) as api:
        yield api


class Watcher:
    """A kubernetes_asyncio watch consumed by a task: events land in ``events``."""

    def __init__(self, kube: KubeAPI, func: Callable[..., Any], *args: Any, **kwargs: Any):
        self.kube = kube
        self.watch = watch.Watch()
        self.events: list[dict[str, Any]] = []
        self.error: BaseException | None = None
        self._arrived = asyncio.Event()
        self._stream = self.watch.stream(func, *args, **kwargs)
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            async for event in self._stream:
                self.events.append(event)
                self._arrived.set()
        except BaseException as e:
            self.error = e
            raise
        finally:
            self._arrived.set()

    async def until(self, done: Callable[[list[dict[str, Any]]], bool]) -> list[dict[str, Any]]:
        async with asyncio.timeout(WAIT):
            while not done(self.events):
                if self.task.done():
                    raise AssertionError(f"the watch ended: {self.error!r}; {self.events}")
                self._arrived.clear()
                await self._arrived.wait()
        return self.events

    async def close(self) -> None:
        self.watch.stop()
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.watch.close()


def changes(events: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(type, name, resourceVersion) of the events that are not bookmarks."""
    return [
        (
            e["type"],
            e["raw_object"]["metadata"]["name"],
            e["raw_object"]["metadata"]["resourceVersion"],
        )
        for e in events
        if e["type"] != "BOOKMARK"
    ]


def bookmark_after(rv: str) -> Callable[[list[dict[str, Any]]], bool]:
    def done(events: list[dict[str, Any]]) -> bool:
        return any(
            e["type"] == "BOOKMARK"
            and int(e["raw_object"]["metadata"]["resourceVersion"]) >= int(rv)
            for e in events
        )

    return done


async def watching(kube: KubeAPI, resource: str, count: int = 1) -> None:
    await kube.await_until(lambda k: k.open_watches(resource) >= count, timeout=WAIT)


async def test_kubeconfig_discovery_and_authentication(kube: KubeAPI, client: ApiClient) -> None:
    version = await VersionApi(client).get_code()
    assert version.git_version == f"v{K8S_VERSION}.0"
    assert (await CoreApi(client).get_api_versions()).versions == ["v1"]
    groups = {g.name for g in (await ApisApi(client).get_api_versions()).groups}
    assert {"networking.k8s.io", "discovery.k8s.io", "coordination.k8s.io"} <= groups
    names = [n.metadata.name for n in (await CoreV1Api(client).list_namespace()).items]
    assert "default" in names and "kube-system" in names

    async with aiohttp.ClientSession() as session:
        async with session.get(f"{kube.url}/api/v1/namespaces") as resp:
            assert resp.status == 401
            body = await resp.json()
        assert body["reason"] == "Unauthorized" and body["code"] == 401
        headers = {"Authorization": f"Bearer {kube.token}"}
        async with session.get(f"{kube.url}/apis/networking.k8s.io/v1", headers=headers) as resp:
            doc = await resp.json()
        assert {"ingresses", "ingresses/status", "ingressclasses"} <= {
            r["name"] for r in doc["resources"]
        }
        async with session.get(f"{kube.url}/api/v1/nothings", headers=headers) as resp:
            assert resp.status == 404
            assert (await resp.json())["reason"] == "NotFound"


async def test_list_resource_version_pages_and_selectors(kube: KubeAPI, client: ApiClient) -> None:
    core = CoreV1Api(client)
    kube.apply_many(configmap(f"cm-{i}", tier="web" if i < 4 else "db") for i in range(7))
    kube.apply(configmap("plain"))
    tls = {"tls.crt": "", "tls.key": ""}
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": {"name": "cert", "namespace": NS},
            "data": tls,
        }
    )
    kube.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "other"}})

    first = await core.list_namespaced_config_map(NS, limit=3)
    rv = first.metadata.resource_version
    assert rv == str(kube.resource_version)
    assert first.metadata.remaining_item_count == 5
    pages, token = [first], first.metadata._continue
    while token:
        page = await core.list_namespaced_config_map(NS, limit=3, _continue=token)
        assert page.metadata.resource_version == rv  # one snapshot for every page
        pages.append(page)
        token = page.metadata._continue
    assert [len(p.items) for p in pages] == [3, 3, 2]
    names = [i.metadata.name for p in pages for i in p.items]
    assert names == [*(f"cm-{i}" for i in range(7)), "plain"]
    assert all(i.kind is None and i.api_version is None for p in pages for i in p.items)

    # a later write: the old version stays listable exactly, the newest list shows the write
    kube.apply(configmap("cm-0", value="2", tier="web"))
    old = await core.list_namespaced_config_map(NS, resource_version=rv, limit=100)
    assert old.metadata.resource_version == rv
    assert {i.metadata.name: i.data["value"] for i in old.items}["cm-0"] == "1"
    new = await core.list_namespaced_config_map(NS)
    assert int(new.metadata.resource_version) > int(rv)
    assert {i.metadata.name: i.data["value"] for i in new.items}["cm-0"] == "2"

    async def names_for(**kwargs: str) -> list[str]:
        return [
            i.metadata.name for i in (await core.list_namespaced_config_map(NS, **kwargs)).items
        ]

    assert await names_for(label_selector="tier=web") == ["cm-0", "cm-1", "cm-2", "cm-3"]
    assert await names_for(label_selector="tier in (db, cache)") == ["cm-4", "cm-5", "cm-6"]
    assert await names_for(label_selector="!tier") == ["plain"]
    assert await names_for(label_selector="tier!=web") == ["cm-4", "cm-5", "cm-6", "plain"]
    assert await names_for(label_selector="tier,tier notin (web)") == ["cm-4", "cm-5", "cm-6"]
    assert await names_for(field_selector="metadata.name=cm-5") == ["cm-5"]
    assert await names_for(field_selector="metadata.name!=plain,metadata.namespace==shop") == [
        f"cm-{i}" for i in range(7)
    ]
    tls_secrets = await core.list_secret_for_all_namespaces(field_selector="type=kubernetes.io/tls")
    assert [s.metadata.name for s in tls_secrets.items] == ["cert"]
    assert kube.get("Secret", None, "other") is not None  # namespace "default" when missing

    # compaction: the exact old version and the old continue token are gone
    kube.compact()
    with pytest.raises(ApiException) as e:
        await core.list_namespaced_config_map(NS, resource_version=rv, limit=100)
    assert e.value.status == 410
    assert status_body(e.value)["reason"] == "Expired"
    with pytest.raises(ApiException) as e:
        await core.list_namespaced_config_map(NS, limit=3, _continue=first.metadata._continue)
    body = status_body(e.value)
    assert body["reason"] == "Expired" and body["message"].startswith("The provided continue")
    assert body["metadata"]["continue"]  # the token to carry on inconsistently
    assert kube.count("list", "configmaps") == 14


async def test_watch_from_list_sees_exactly_the_later_changes(
    kube: KubeAPI, client: ApiClient
) -> None:
    net = NetworkingV1Api(client)
    kube.apply(ingress("before"))
    listed = await net.list_namespaced_ingress(NS)
    w = Watcher(
        kube,
        net.list_namespaced_ingress,
        NS,
        resource_version=listed.metadata.resource_version,
        allow_watch_bookmarks=True,
        timeout_seconds=30,
    )
    try:
        await watching(kube, "ingresses")
        added = kube.apply(ingress("web"))
        kube.apply(configmap("unrelated"))  # another resource: not in this watch
        modified = kube.apply(ingress("web", host="other.example.com"))
        kube.apply(ingress("elsewhere") | {"metadata": {"name": "elsewhere", "namespace": "x"}})
        kube.delete("Ingress", NS, "web")
        deleted_rv = str(kube.resource_version)
        events = await w.until(bookmark_after(deleted_rv))
    finally:
        await w.close()
    assert changes(events) == [
        ("ADDED", "web", added["metadata"]["resourceVersion"]),
        ("MODIFIED", "web", modified["metadata"]["resourceVersion"]),
        ("DELETED", "web", deleted_rv),  # the last state, at the deletion's version
    ]
    assert events[-1]["raw_object"]["kind"] == "Ingress"
    deleted = next(e for e in events if e["type"] == "DELETED")
    assert deleted["object"].spec.rules[0].host == "other.example.com"
    for e in events:
        obj = e["raw_object"]
        assert obj["kind"] == "Ingress" and obj["apiVersion"] == "networking.k8s.io/v1"
        if e["type"] == "BOOKMARK":
            assert set(obj) == {"kind", "apiVersion", "metadata"}
            assert set(obj["metadata"]) == {"resourceVersion"}


async def test_watch_from_nothing_starts_with_the_current_objects(
    kube: KubeAPI, client: ApiClient
) -> None:
    net = NetworkingV1Api(client)
    kube.apply_many([ingress("a", app="x"), ingress("b", app="y")])
    w = Watcher(kube, net.list_namespaced_ingress, NS, label_selector="app=x", timeout_seconds=30)
    try:
        await w.until(lambda ev: len(ev) >= 1)
        kube.apply(ingress("a", app="y"))  # stops matching: DELETED for this watch
        kube.apply(ingress("b", app="x"))  # starts matching: ADDED
        events = await w.until(lambda ev: len(ev) >= 3)
    finally:
        await w.close()
    assert [(t, n) for t, n, _ in changes(events)] == [
        ("ADDED", "a"),
        ("DELETED", "a"),
        ("ADDED", "b"),
    ]


async def test_resuming_from_a_bookmark_misses_and_repeats_nothing(
    kube: KubeAPI, client: ApiClient
) -> None:
    net = NetworkingV1Api(client)
    rv = (await net.list_namespaced_ingress(NS)).metadata.resource_version
    w = Watcher(
        kube,
        net.list_namespaced_ingress,
        NS,
        resource_version=rv,
        allow_watch_bookmarks=True,
        timeout_seconds=30,
    )
    try:
        await watching(kube, "ingresses")
        kube.apply(ingress("one"))
        events = await w.until(bookmark_after(str(kube.resource_version)))
    finally:
        await w.close()
    assert [(t, n) for t, n, _ in changes(events)] == [("ADDED", "one")]
    bookmark = [e for e in events if e["type"] == "BOOKMARK"][-1]
    resume = bookmark["raw_object"]["metadata"]["resourceVersion"]
    assert w.watch.resource_version == resume  # what the library itself would resume from

    kube.apply(ingress("two"))  # while nobody watches
    kube.apply(ingress("one", host="one.example.com"))
    kube.delete("Ingress", NS, "two")
    last = str(kube.resource_version)
    w = Watcher(
        kube,
        net.list_namespaced_ingress,
        NS,
        resource_version=resume,
        allow_watch_bookmarks=True,
        timeout_seconds=30,
    )
    try:
        events = await w.until(bookmark_after(last))
    finally:
        await w.close()
    assert [(t, n) for t, n, _ in changes(events)] == [
        ("ADDED", "two"),
        ("MODIFIED", "one"),
        ("DELETED", "two"),
    ]
    assert changes(events)[-1][2] == last


async def test_watch_from_a_compacted_version_gets_410(kube: KubeAPI, client: ApiClient) -> None:
    net = NetworkingV1Api(client)
    old = (await net.list_namespaced_ingress(NS)).metadata.resource_version
    kube.apply_many([ingress("a"), ingress("b")])
    kube.compact()
    stream = watch.Watch().stream(
        net.list_namespaced_ingress, NS, resource_version=old, timeout_seconds=5
    )
    with pytest.raises(ApiException) as e:
        async with asyncio.timeout(WAIT):
            async for _ in stream:
                pass
    assert e.value.status == 410
    assert e.value.reason == f"Expired: too old resource version: {old} ({kube.resource_version})"
    await stream.close()

    # a fresh list gives a version that can be watched from
    fresh = (await net.list_namespaced_ingress(NS)).metadata.resource_version
    w = Watcher(kube, net.list_namespaced_ingress, NS, resource_version=fresh, timeout_seconds=30)
    try:
        await watching(kube, "ingresses")
        kube.apply(ingress("c"))
        events = await w.until(lambda ev: len(ev) >= 1)
    finally:
        await w.close()
    assert [(t, n) for t, n, _ in changes(events)] == [("ADDED", "c")]
    assert kube.count("watch", "ingresses") == 2


async def test_forbidden_requests(kube: KubeAPI, client: ApiClient) -> None:
    core, net = CoreV1Api(client), NetworkingV1Api(client)
    kube.forbid("list", "secrets")
    with pytest.raises(ApiException) as e:
        await core.list_secret_for_all_namespaces()
    assert e.value.status == 403
    body = status_body(e.value)
    assert body["reason"] == "Forbidden"
    assert body["message"] == (
        f'secrets is forbidden: User "{USER}" cannot list resource "secrets" in API group "" '
        "at the cluster scope"
    )
    assert body["details"] == {"kind": "secrets"}
    with pytest.raises(ApiException) as e:
        await core.list_namespaced_secret(NS)
    assert status_body(e.value)["message"].endswith(f'in the namespace "{NS}"')

    kube.apply(ingress("web"))
    kube.forbid("get", "ingresses", namespace=NS)
    with pytest.raises(ApiException) as e:
        await net.read_namespaced_ingress("web", NS)
    body = status_body(e.value)
    assert body["message"] == (
        f'ingresses.networking.k8s.io "web" is forbidden: User "{USER}" cannot get resource '
        f'"ingresses" in API group "networking.k8s.io" in the namespace "{NS}"'
    )
    assert body["details"] == {"name": "web", "group": "networking.k8s.io", "kind": "ingresses"}
    with pytest.raises(ApiException) as e:
        await net.read_namespaced_ingress("web", "elsewhere")  # only NS is forbidden
    assert e.value.status == 404
    assert status_body(e.value)["message"] == 'ingresses.networking.k8s.io "web" not found'

    kube.forbid("patch", "ingresses/status")
    with pytest.raises(ApiException) as e:
        await net.patch_namespaced_ingress_status("web", NS, {"status": {}})
    assert 'cannot patch resource "ingresses/status"' in status_body(e.value)["message"]

    kube.allow("list", "secrets")
    kube.allow("get", "ingresses", namespace=NS)
    await core.list_secret_for_all_namespaces()
    assert (await net.read_namespaced_ingress("web", NS)).metadata.name == "web"
    assert kube.count("list", "secrets") == 3
    assert kube.count("get", "ingresses") == 3
    assert [r.code for r in kube.requests if r.resource == "ingresses/status"] == [403]


async def test_status_subresource(kube: KubeAPI, client: ApiClient) -> None:
    net = NetworkingV1Api(client)
    stored = kube.apply(ingress("web"))
    assert stored["metadata"]["generation"] == 1 and "status" not in stored
    w = Watcher(
        kube,
        net.list_namespaced_ingress,
        NS,
        resource_version=stored["metadata"]["resourceVersion"],
        timeout_seconds=30,
    )
    try:
        await watching(kube, "ingresses")
        body = ingress("web", host="changed.example.com")
        body["status"] = {"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}}
        patched = await net.patch_namespaced_ingress_status("web", NS, body)
        assert patched.status.load_balancer.ingress[0].ip == "10.0.0.1"
        assert patched.spec.rules[0].host == "app.example.com"  # spec untouched
        assert patched.metadata.generation == 1
        read = await net.read_namespaced_ingress_status("web", NS)
        assert read.status.load_balancer.ingress[0].ip == "10.0.0.1"

        body = ingress("web", host="changed.example.com")
        body["metadata"]["resourceVersion"] = patched.metadata.resource_version
        body["status"] = {"loadBalancer": {}}
        replaced = await net.replace_namespaced_ingress("web", NS, body)
        assert replaced.spec.rules[0].host == "changed.example.com"
        assert replaced.status.load_balancer.ingress[0].ip == "10.0.0.1"  # status kept
        assert replaced.metadata.generation == 2

        clear = {"status": {"loadBalancer": {"ingress": None}}}  # RFC 7386: null removes
        again = await net.patch_namespaced_ingress_status("web", NS, clear)
        assert again.status.load_balancer.ingress is None
        same = await net.patch_namespaced_ingress_status("web", NS, clear)
        assert same.metadata.resource_version == again.metadata.resource_version  # no-op

        events = await w.until(lambda ev: len(ev) >= 3)
    finally:
        await w.close()
    assert [(t, rv) for t, _, rv in changes(events)] == [
        ("MODIFIED", patched.metadata.resource_version),
        ("MODIFIED", replaced.metadata.resource_version),
        ("MODIFIED", again.metadata.resource_version),
    ]
    assert events[0]["object"].status.load_balancer.ingress[0].ip == "10.0.0.1"

    # the test side: a status given is stored (as another controller wrote it), none keeps it
    lb = {"loadBalancer": {"ingress": [{"hostname": "lb.example.com"}]}}
    assert kube.apply(ingress("web") | {"status": lb})["status"] == lb
    kept = kube.apply(ingress("web", host="third.example.com"))
    assert kept["status"] == lb and kept["metadata"]["generation"] == 4


async def test_lease_optimistic_concurrency(kube: KubeAPI, client: ApiClient) -> None:
    leases = CoordinationV1Api(client)
    lease = V1Lease(
        metadata=V1ObjectMeta(name="wslb-leader", namespace=NS),
        spec=V1LeaseSpec(holder_identity="pod-a", lease_duration_seconds=15),
    )
    created = await leases.create_namespaced_lease(NS, lease)
    assert created.metadata.uid and created.metadata.creation_timestamp
    with pytest.raises(ApiException) as e:
        await leases.create_namespaced_lease(NS, lease)
    assert e.value.status == 409 and status_body(e.value)["reason"] == "AlreadyExists"

    created.spec.holder_identity = "pod-b"
    updated = await leases.replace_namespaced_lease("wslb-leader", NS, created)
    assert int(updated.metadata.resource_version) > int(created.metadata.resource_version)

    created.spec.holder_identity = "pod-c"  # still carries the old resourceVersion
    with pytest.raises(ApiException) as e:
        await leases.replace_namespaced_lease("wslb-leader", NS, created)
    assert e.value.status == 409
    body = status_body(e.value)
    assert body["reason"] == "Conflict"
    assert body["message"] == (
        'Operation cannot be fulfilled on leases.coordination.k8s.io "wslb-leader": the object '
        "has been modified; please apply your changes to the latest version and try again"
    )
    assert kube.get("Lease", NS, "wslb-leader")["spec"]["holderIdentity"] == "pod-b"

    created.metadata.resource_version = None  # leases take no unconditional update
    with pytest.raises(ApiException) as e:
        await leases.replace_namespaced_lease("wslb-leader", NS, created)
    assert e.value.status == 422


async def test_invalid_objects_are_refused(kube: KubeAPI, client: ApiClient) -> None:
    core = CoreV1Api(client)
    bad = configmap("bad")
    bad["data"] = {"n": 1}
    with pytest.raises(ApiException) as e:
        await core.create_namespaced_config_map(NS, bad)
    assert e.value.status == 422
    body = status_body(e.value)
    assert body["reason"] == "Invalid"
    assert body["details"]["kind"] == "ConfigMap" and body["details"]["name"] == "bad"
    assert [c["field"] for c in body["details"]["causes"]] == ["data.n"]
    assert body["message"].startswith('ConfigMap "bad" is invalid: data.n: Invalid value: 1')

    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"ports": [{"port": 80}], "bogus": True},
    }
    with pytest.raises(ApiException) as e:
        await core.create_namespaced_service(NS, svc)
    assert [c["field"] for c in status_body(e.value)["details"]["causes"]] == ["spec.bogus"]
    assert kube.objects("Service", NS) == []

    with pytest.raises(ValueError, match=r"data\.n"):
        kube.apply(bad)
    with pytest.raises(kubernetes_validate.ValidationError):  # the same verdict as the library's
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)
    assert kube.get("ConfigMap", NS, "bad") is None


def test_validation_is_cheap() -> None:
    with KubeAPI() as kube:
        kube.apply(ingress("warm"))
        started = time.perf_counter()
        kube.apply_many(ingress(f"i{i}", host=f"i{i}.example.com") for i in range(200))
        per_object = (time.perf_counter() - started) / 200
    assert per_object < 0.005, f"{per_object * 1000:.1f} ms per object"


async def test_cut_watches_ends_the_stream_with_an_error(kube: KubeAPI, client: ApiClient) -> None:
    net = NetworkingV1Api(client)
    w = Watcher(kube, net.list_ingress_for_all_namespaces)  # no timeout: watch "forever"
    try:
        await watching(kube, "ingresses")
        kube.apply(ingress("web"))
        await w.until(lambda ev: len(ev) >= 1)
        assert kube.cut_watches() == 1
        async with asyncio.timeout(WAIT):
            await asyncio.gather(w.task, return_exceptions=True)
    finally:
        await w.close()
    assert isinstance(w.error, aiohttp.ClientPayloadError), repr(w.error)


async def test_pause_and_resume(kube: KubeAPI, client: ApiClient) -> None:
    core = CoreV1Api(client)
    url = kube.url
    await core.list_namespace()
    w = Watcher(kube, core.list_namespaced_config_map, NS, timeout_seconds=30)
    await watching(kube, "configmaps")
    kube.pause()
    try:
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", kube.port)
        with pytest.raises(aiohttp.ClientConnectionError):
            async with asyncio.timeout(WAIT):
                await core.list_namespace()
        async with asyncio.timeout(WAIT):
            await asyncio.gather(w.task, return_exceptions=True)
        assert isinstance(w.error, aiohttp.ClientError), repr(w.error)
    finally:
        kube.resume()
        await w.close()
    assert kube.url == url
    assert "default" in [n.metadata.name for n in (await core.list_namespace()).items]


async def test_writes_patches_and_deletes(kube: KubeAPI, client: ApiClient) -> None:
    core = CoreV1Api(client)
    cm = await core.create_namespaced_config_map(
        NS, {"metadata": {"generateName": "gen-"}, "data": {"a": "1"}}
    )
    name = cm.metadata.name
    assert name.startswith("gen-") and len(name) == 9

    # a list body: the client sends application/json-patch+json
    cm = await core.patch_namespaced_config_map(
        name, NS, [{"op": "add", "path": "/data/b", "value": "2"}]
    )
    assert cm.data == {"a": "1", "b": "2"}
    cm = await core.patch_namespaced_config_map(name, NS, {"data": {"a": None}})  # strategic
    assert cm.data == {"b": "2"}
    cm = await core.patch_namespaced_config_map(
        name, NS, {"data": {"c": "3"}}, _content_type="application/merge-patch+json"
    )
    assert cm.data == {"b": "2", "c": "3"}
    with pytest.raises(ApiException) as e:  # a patch may carry a resourceVersion precondition
        await core.patch_namespaced_config_map(name, NS, {"metadata": {"resourceVersion": "1"}})
    assert e.value.status == 409

    status = await core.delete_namespaced_config_map(name, NS)
    assert status.status == "Success" and status.details.kind == "configmaps"
    with pytest.raises(ApiException) as e:
        await core.delete_namespaced_config_map(name, NS)
    assert status_body(e.value)["message"] == f'configmaps "{name}" not found'

    # EndpointSlices, and events written through events.k8s.io read back as core v1 events
    discovery = DiscoveryV1Api(client)
    await discovery.create_namespaced_endpoint_slice(
        NS,
        {
            "metadata": {"name": "web-abc", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.5"], "conditions": {"ready": True}}],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        },
    )
    slices = await discovery.list_namespaced_endpoint_slice(
        NS, label_selector="kubernetes.io/service-name=web"
    )
    assert [s.endpoints[0].addresses for s in slices.items] == [["10.0.0.5"]]
    await EventsV1Api(client).create_namespaced_event(
        NS,
        {
            "metadata": {"name": "web.1"},
            "eventTime": "2025-01-01T00:00:00.000000Z",
            "reason": "Sync",
            "note": "synced",
            "type": "Normal",
            "action": "Sync",
            "reportingController": "wslb",
            "reportingInstance": "wslb-0",
            "regarding": {"kind": "Ingress", "name": "web", "namespace": NS},
        },
    )
    events = await core.list_namespaced_event(NS, field_selector="involvedObject.name=web")
    assert [(e.reason, e.message, e.reporting_component) for e in events.items] == [
        ("Sync", "synced", "wslb")
    ]
