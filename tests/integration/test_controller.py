"""Controller mode (`wslb controller`) against the Kubernetes API stand-in (tests/support/kubeapi.py):
the seed's objects served from the API, replicas that agree with no secret given, endpoint
changes without reloads, watches that break, an API that goes away, Secrets renewed."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import shutil
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
import yaml
from websockets.asyncio.client import connect

from tests.integration.conftest import endpoints
from tests.integration.test_kubernetes import _certdir, _client_ctx
from tests.support.chat import CHAT, chat_cluster
from tests.support.kubeapi import KubeAPI
from tests.support.procs import ROOT, Proc, Wslb, scaled

FIXTURES = ROOT / "tests" / "fixtures"
WAIT = scaled(20.0)


def seed_objects() -> list[dict[str, Any]]:
    """The seed's Ingress (as `kubectl convert` makes it networking.k8s.io/v1, the version the
    API serves since 1.22) and its LoadBalancer Service, as the fixtures have them."""
    ingress = yaml.safe_load((FIXTURES / "seed-ingress.yaml").read_text())
    service = yaml.safe_load((FIXTURES / "seed-service.yaml").read_text())
    ingress["apiVersion"] = "networking.k8s.io/v1"
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            old = path.pop("backend")
            path["pathType"] = "ImplementationSpecific"
            path["backend"] = {
                "service": {"name": old["serviceName"], "port": {"number": old["servicePort"]}}
            }
    return [namespace("vuepilot"), namespace("ingress-nginx"), ingress, service]


def configmap(data: dict[str, str]) -> dict[str, Any]:
    """ingress-nginx's controller ConfigMap, where its Helm chart puts it."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "ingress-nginx-controller", "namespace": "ingress-nginx"},
        "data": data,
    }


def ingress(ns: str, name: str, svc: str, host: str | None = None) -> dict[str, Any]:
    """A networking.k8s.io/v1 Ingress of class wslb: ``host`` (or any) / to ``svc`` port 80."""
    rule: dict[str, Any] = {
        "http": {
            "paths": [
                {
                    "path": "/",
                    "pathType": "Prefix",
                    "backend": {"service": {"name": svc, "port": {"number": 80}}},
                }
            ]
        }
    }
    if host is not None:
        rule["host"] = host
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"ingressClassName": "wslb", "rules": [rule]},
    }


def namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def ingress_class(name: str = "nginx", default: bool = True) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if default:
        meta["annotations"] = {"ingressclass.kubernetes.io/is-default-class": "true"}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IngressClass",
        "metadata": meta,
        "spec": {"controller": "wslb.io/ingress-controller"},
    }


def service(ns: str, name: str, port: int = 8080, target: int | str = 8080) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "type": "ClusterIP",
            "selector": {"app": name},
            "ports": [{"name": "http", "port": port, "targetPort": target}],
        },
    }


def endpoint_slice(
    ns: str,
    svc: str,
    addresses: list[tuple[str, int]],
    terminating: frozenset[str] = frozenset(),
    name: str | None = None,
) -> list[dict[str, Any]]:
    """One EndpointSlice per port (loopback pods differ by port, pods of a cluster by IP)."""
    by_port: dict[int, list[str]] = {}
    for host, port in addresses:
        by_port.setdefault(port, []).append(host)
    out = []
    for port, hosts in sorted(by_port.items()):
        eps = []
        for h in hosts:
            ending = f"{h}:{port}" in terminating
            eps.append(
                {
                    "addresses": [h],
                    "conditions": {
                        "ready": not ending,
                        "serving": True,
                        "terminating": ending,
                    },
                }
            )
        out.append(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"{name or svc}-{port}",
                    "namespace": ns,
                    "labels": {"kubernetes.io/service-name": svc},
                },
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
                "endpoints": eps,
            }
        )
    return out


def tls_secret(ns: str, name: str, cert: trustme.LeafCert) -> dict[str, Any]:
    chain = b"".join(p.bytes() for p in cert.cert_chain_pems)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {"name": name, "namespace": ns},
        "data": {
            "tls.crt": base64.b64encode(chain).decode(),
            "tls.key": base64.b64encode(cert.private_key_pem.bytes()).decode(),
        },
    }


class Controller(Proc):
    """``wslb controller`` with a kubeconfig for the stand-in, its ports mapped to free ones."""

    def __init__(self, api: KubeAPI, workdir: Path, extra: list[str], name: str) -> None:
        kubeconfig = api.write_kubeconfig(workdir / f"kubeconfig-{name}", namespace="ingress")
        ready = workdir / f"ready-{name}.json"
        args = [
            sys.executable,
            "-m",
            "wslb",
            "controller",
            "--kubeconfig",
            str(kubeconfig),
            "--bind-address",
            "127.0.0.1",
            "--ready-file",
            str(ready),
            "--log-level",
            "info",
            *extra,
        ]
        super().__init__(args, ready, env={"POD_NAME": name})

    def port(self, suffix: str) -> int:
        for listener, info in self.info["listeners"].items():
            if listener.endswith(suffix):
                return int(info["port"])
        raise KeyError(suffix)


@pytest.fixture
def api() -> Iterator[KubeAPI]:
    with KubeAPI(namespaces=("default", "ingress")) as server:
        yield server


@pytest.fixture
def controller(api: KubeAPI, tmp_path: Path) -> Iterator[Callable[..., Controller]]:
    started: list[Controller] = []

    def start(extra: list[str], name: str = "wslb-0", wait: bool = True) -> Controller:
        proc = Controller(api, tmp_path, extra, name)
        started.append(proc)
        if wait:
            proc.wait_ready(timeout=WAIT)
        return proc

    yield start
    for p in started:
        p.stop()


def _pods(backends: list[Proc]) -> list[tuple[str, int]]:
    out = []
    for e in endpoints(backends):
        host, _, port = e.rpartition(":")
        out.append((host, int(port)))
    return out


async def _wait_for(predicate: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    """Poll ``predicate`` (a cheap check of state) until it is true; fail after ``timeout``."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_seed_objects_from_the_api(
    api: KubeAPI,
    controller: Callable[..., Controller],
    backends: list[Proc],
    ca: trustme.CA,
    tmp_path: Path,
) -> None:
    """The seed's Ingress and Service applied through the API: HTTP redirected with 308,
    HTTPS by SNI with the DO certificate, the affinity cookie and CORS, as with files; and
    .status.loadBalancer written once, by one of two replicas."""
    objs = seed_objects()
    objs[3]["status"] = {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}
    api.apply_many(
        [
            *objs,
            ingress_class(),
            service("vuepilot", "vuepilot-node"),
            *endpoint_slice("vuepilot", "vuepilot-node", _pods(backends)),
            configmap({"hsts-max-age": "600"}),
        ]
    )
    certs = _certdir(tmp_path, ca, "xxx-xxx-xxx", "ws.vuepilot.com")
    common = [
        "--configmap",
        "ingress-nginx/ingress-nginx-controller",
        "--publish-service",
        "ingress-nginx/ingress-nginx",
        "--port-map",
        "80=0,443=0",
        "--certificates",
        str(certs),
    ]
    first = controller(common, "wslb-0")
    second = controller([*common, "--workers", "2"], "wslb-1")
    for lb in (first, second):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{lb.port('-http')}") as client:
            r = await client.get("/socket.io/?EIO=4", headers={"Host": "ws.vuepilot.com"})
        assert r.status_code == 308
        assert r.headers["location"] == "https://ws.vuepilot.com/socket.io/?EIO=4"
        base = f"https://127.0.0.1:{lb.port('-https')}"
        ext = {"sni_hostname": "ws.vuepilot.com"}
        headers = {"Host": "ws.vuepilot.com"}
        async with httpx.AsyncClient(base_url=base, verify=_client_ctx(ca)) as client:
            r = await client.get("/hello", headers=headers, extensions=ext)
            assert r.status_code == 200
            assert r.headers["set-cookie"].startswith("route=")
            assert r.headers["strict-transport-security"].startswith("max-age=600")
            pre = await client.options(
                "/socket.io/",
                headers={
                    **headers,
                    "Origin": "https://app.vuepilot.com",
                    "Access-Control-Request-Method": "POST",
                },
                extensions=ext,
            )
        assert pre.status_code == 204
        assert pre.headers["access-control-allow-origin"] == "https://app.vuepilot.com"
    # the status: written by the Lease holder only, once
    await api.await_until(
        lambda a: (
            ((a.get("Ingress", "vuepilot", "vuepilot-node") or {}).get("status", {}))
            .get("loadBalancer", {})
            .get("ingress")
            == [{"ip": "203.0.113.7"}]
        ),
        timeout=WAIT,
    )
    writes = [
        r
        for r in api.requests
        if r.resource == "ingresses/status" and r.verb in ("patch", "update")
    ]
    assert len(writes) == 1, writes
    assert api.get("Secret", "ingress", "wslb-affinity") is not None
    # the ConfigMap edited: applied (a reload)
    api.apply(configmap({"hsts-max-age": "700"}))
    first.wait_output("configuration generation 2 applied", WAIT)
    base = f"https://127.0.0.1:{first.port('-https')}"
    async with httpx.AsyncClient(base_url=base, verify=_client_ctx(ca)) as client:
        r = await client.get("/hello", headers=headers, extensions=ext)
    assert r.headers["strict-transport-security"].startswith("max-age=700")
    # an Ingress no longer served (another class now): its status is cleared, once
    moved = api.get("Ingress", "vuepilot", "vuepilot-node")
    assert moved is not None
    moved["spec"]["ingressClassName"] = "other"
    api.apply(moved)
    await api.await_until(
        lambda a: (
            not ((a.get("Ingress", "vuepilot", "vuepilot-node") or {}).get("status", {}))
            .get("loadBalancer", {})
            .get("ingress")
        ),
        timeout=WAIT,
    )
    writes = [
        r
        for r in api.requests
        if r.resource == "ingresses/status" and r.verb in ("patch", "update")
    ]
    assert len(writes) == 2, writes


# --------------------------------------------------------------------------- Socket.IO


@pytest.fixture(scope="module")
def chat_pods(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Proc]]:
    with chat_cluster(tmp_path_factory.mktemp("chat"), 4) as (_redis, pods):
        yield pods


def chat_objects(
    pods: list[Proc], terminating: frozenset[str] = frozenset()
) -> list[dict[str, Any]]:
    ing = ingress("chat", "chat", "chat")
    ing["metadata"]["annotations"] = {"wslb.io/drain-window": "2"}
    return [
        namespace("chat"),
        ing,
        service("chat", "chat", 80, "http"),
        *endpoint_slice("chat", "chat", _pods(pods), terminating),
    ]


def _set_slices(api: KubeAPI, pods: list[Proc], terminating: frozenset[str] = frozenset()) -> None:
    """The Service's EndpointSlices become ``pods`` (one slice per port): as the
    EndpointSlice controller does, slices of pods that left are deleted."""
    wanted = endpoint_slice("chat", "chat", _pods(pods), terminating)
    names = {s["metadata"]["name"] for s in wanted}
    api.apply_many(wanted)
    for s in api.objects("EndpointSlice", "chat"):
        if s["metadata"]["name"] not in names:
            api.delete("EndpointSlice", "chat", s["metadata"]["name"])


def shop_objects_elsewhere() -> list[dict[str, Any]]:
    """An Ingress in namespace ``other`` for a host the chat Ingress does not name, whose
    Service has no pods: served, it would answer 503."""
    ing = ingress("other", "elsewhere", "none", "elsewhere.example.com")
    return [namespace("other"), ing, service("other", "none", 80, "http")]


class Rounds:
    """tests/node/chat_rounds.js: Node socket.io-client clients driven round by round."""

    def __init__(self, url: str, n: int) -> None:
        node = shutil.which("node")
        if node is None or not (CHAT / "node_modules" / "socket.io-client").exists():
            pytest.skip("node or the socket.io-client npm package is missing (make venv)")
        self.proc = subprocess.Popen(
            [node, str(ROOT / "tests" / "node" / "chat_rounds.js"), url, str(n)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    async def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        async with asyncio.timeout(scaled(60)):
            line = await asyncio.to_thread(self.proc.stdout.readline)
        assert line, "the Node clients exited"
        return json.loads(line)  # type: ignore[no-any-return]

    async def ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return await self.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


def _statuses(proc: Proc) -> Counter[int]:
    return Counter(int(m) for m in re.findall(r'" (\d{3}) \d+ [\d.]+ms', proc.output()))


async def test_two_replicas_agree_with_no_secret_while_pods_come_and_go(
    api: KubeAPI,
    controller: Callable[..., Controller],
    wslb: Callable[..., Wslb],
    chat_pods: list[Proc],
) -> None:
    """30 Node clients (no cookies) through two replicas that a tcp listener spreads round
    robin, neither given a secret: every message reaches everyone, no 400, while the
    EndpointSlices go 3 -> 4 -> 2 pods (one terminating first)."""
    api.apply_many(chat_objects(chat_pods[:3]))
    api.apply_many(shop_objects_elsewhere())  # another namespace: not watched, not served
    replicas = [
        controller(["--port-map", "80=0,443=0", "--watch-namespace", "chat"], f"wslb-{i}")
        for i in range(2)
    ]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{replicas[0].port('http')}") as c:
        assert (await c.get("/", headers={"Host": "elsewhere.example.com"})).status_code != 503
    front = wslb(
        {
            "listeners": [
                {"name": "lb", "address": "127.0.0.1", "port": 0, "protocol": "tcp", "backend": "r"}
            ],
            "backends": [
                {
                    "name": "r",
                    "protocol": "tcp",
                    "endpoints": [f"127.0.0.1:{r.port('http')}" for r in replicas],
                }
            ],
        }
    )
    clients = Rounds(front.url("lb"), 30)
    try:
        ready = await clients.read()
        assert ready["ready"], ready

        def check(result: dict[str, Any], pods: set[str]) -> None:
            for c in result["clients"]:
                assert c["received"] == result["expected"] and c["dups"] == 0, c
                assert c["pod"] in pods, c

        check(await clients.ask("round three"), {"pod-0", "pod-1", "pod-2"})

        _set_slices(api, chat_pods)  # 3 -> 4
        for r in replicas:
            r.wait_output(f":{chat_pods[3].info['port']}", timeout=WAIT)
        check(await clients.ask("round four"), {"pod-0", "pod-1", "pod-2", "pod-3"})

        # pod-0 terminating first (its clients are closed with 1012 and come back elsewhere),
        # then pod-0 and pod-1 gone: 4 -> 2
        ending = frozenset({f"127.0.0.1:{chat_pods[0].info['port']}"})
        _set_slices(api, chat_pods, ending)
        for r in replicas:
            r.wait_output("(terminating)", timeout=WAIT)
        _set_slices(api, chat_pods[2:])
        live = {"pod-2", "pod-3"}
        loop = asyncio.get_running_loop()
        end = loop.time() + WAIT
        while True:
            where = await clients.ask("pods")
            if all(c["pod"] in live and c["joined"] for c in where["clients"]):
                break
            assert loop.time() < end, where
            await asyncio.sleep(0.2)
        check(await clients.ask("round two"), live)
        check(await clients.ask("round again"), live)
    finally:
        clients.stop()
    for r in replicas:
        statuses = _statuses(r)
        assert statuses[400] == 0, statuses
        out = r.output()
        assert _reloads(r) == 0, out  # endpoint changes: no reload
        assert "endpoints now" in out


# --------------------------------------------------------------------------- resilience


def shop_objects(backends: list[Proc], secret: dict[str, Any]) -> list[dict[str, Any]]:
    ing = ingress("shop", "shop", "web", "app.example.com")
    ing["spec"]["tls"] = [{"hosts": ["app.example.com"], "secretName": "shop-tls"}]
    return [
        namespace("shop"),
        secret,
        ing,
        service("shop", "web", 80, "http"),
        *endpoint_slice("shop", "web", _pods(backends[:2])),
    ]


def _reloads(proc: Proc) -> int:
    """Reloads worker 0 applied (a change of endpoints alone is none)."""
    return len(re.findall(r"worker 0: configuration generation \d+ applied", proc.output()))


def _serial(port: int, ca: trustme.CA) -> int:
    from cryptography import x509

    ctx = _client_ctx(ca)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="app.example.com") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


async def test_watches_cut_expired_forbidden_api_gone_secret_renewed(
    api: KubeAPI,
    controller: Callable[..., Controller],
    backends: list[Proc],
    ca: trustme.CA,
) -> None:
    first_cert = ca.issue_cert("app.example.com")
    api.apply_many(shop_objects(backends, tls_secret("shop", "shop-tls", first_cert)))
    lb = controller(["--port-map", "80=0,443=0", "--workers", "2"])
    https = lb.port("https")
    base = f"https://127.0.0.1:{https}"
    ext = {"sni_hostname": "app.example.com"}
    headers = {"Host": "app.example.com"}
    watches = api.open_watches()
    kept = httpx.AsyncClient(base_url=base, verify=_client_ctx(ca))  # one connection, kept
    ws_ctx = _client_ctx(ca)
    async with (
        kept,
        connect(
            f"wss://app.example.com:{https}/ws",
            host="127.0.0.1",
            ssl=ws_ctx,
            open_timeout=scaled(10),
        ) as ws,
    ):
        assert (await kept.get("/a", headers=headers, extensions=ext)).status_code == 200
        assert _serial(https, ca) == x509_serial(first_cert)
        reloads = _reloads(lb)

        async def traffic_ok() -> None:
            r = await kept.get("/b", headers=headers, extensions=ext)
            assert r.status_code == 200
            await ws.send("whoami")
            assert await ws.recv()

        # a watch cut mid-stream: resumed from its resourceVersion, nothing reloaded
        assert api.cut_watches() == watches
        await api.await_until(lambda a: a.open_watches() == watches, timeout=WAIT)
        lists = api.count("list", "ingresses")
        # an expired resourceVersion: relisted (once), nothing reloaded
        assert api.expire_watches() == watches
        await api.await_until(
            lambda a: a.count("list", "ingresses") == lists + 1 and a.open_watches() == watches,
            timeout=WAIT,
        )
        await traffic_ok()
        # a verb the service account lacks: said once, naming it, and retried
        api.forbid("watch", "endpointslices")
        api.cut_watches()
        lb.wait_output("may not watch endpointslices (API group discovery.k8s.io)", WAIT)
        api.allow("watch", "endpointslices")
        # the API gone for 30 s: traffic unaffected
        api.pause()
        loop = asyncio.get_running_loop()
        end = loop.time() + 30
        while loop.time() < end:
            await traffic_ok()
            await asyncio.sleep(0.5)
        api.resume()
        await api.await_until(lambda a: a.open_watches() == watches, timeout=scaled(60))
        assert _reloads(lb) == reloads, lb.output()
        assert lb.output().count("may not watch endpointslices") == 1
        # the state converged: a change made now is applied (without a reload: endpoints)
        api.apply_many(endpoint_slice("shop", "web", _pods(backends)))
        lb.wait_output(f":{backends[2].info['port']}", WAIT)
        assert _reloads(lb) == reloads

        # a cert-manager renewal: new handshakes get the new certificate, open connections
        # (the kept HTTP/1.1 one, the WebSocket) go on
        renewed = ca.issue_cert("app.example.com")
        api.apply(tls_secret("shop", "shop-tls", renewed))
        lb.wait_output("worker 1: configuration generation", WAIT)
        await _wait_for(lambda: _serial(https, ca) == x509_serial(renewed), "the new cert")
        await traffic_ok()
        assert _reloads(lb) == reloads + 1

        # an invalid Ingress: reported on it (a Warning Event and the log), the rest serves
        bad = ingress("shop", "broken", "web", "bad.example.com")
        bad["metadata"]["annotations"] = {"nginx.ingress.kubernetes.io/proxy-read-timeout": "soon"}
        api.apply(bad)
        await api.await_until(
            lambda a: any(
                e.get("involvedObject", {}).get("name") == "broken"
                and e.get("type") == "Warning"
                and "proxy-read-timeout" in e.get("message", "")
                for e in a.objects("Event", "shop")
            ),
            timeout=WAIT,
        )
        lb.wait_output("Ingress shop/broken", WAIT)
        await traffic_ok()

        # a burst: 20 Ingresses applied at once are one reload
        before = _reloads(lb)
        api.apply_many(ingress("shop", f"burst-{i}", "web", f"b{i}.example.com") for i in range(20))
        await _wait_for(lambda: _reloads(lb) > before, "the burst's reload")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{lb.port('http')}") as plain:
            r = await plain.get("/", headers={"Host": "b19.example.com"})
            assert r.status_code in (200, 308), r
        assert _reloads(lb) == before + 1, lb.output()
        await traffic_ok()


def x509_serial(cert: trustme.LeafCert) -> int:
    from cryptography import x509

    return x509.load_pem_x509_certificate(cert.cert_chain_pems[0].bytes()).serial_number
