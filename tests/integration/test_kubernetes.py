"""Kubernetes manifests as configuration, served for real: the published seed manifests, a
networking.k8s.io/v1 Ingress with EndpointSlices and TLS Secrets, affinity across restarts."""

from __future__ import annotations

import base64
import ssl
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
import yaml
from websockets.asyncio.client import connect

from tests.integration.conftest import endpoints
from tests.support.procs import ROOT, Proc, Wslb, scaled, start_backend
from tests.support.raw import raw_exchange, status_of
from wslb.cli import render_yaml
from wslb.config.kubernetes.objects import load_objects
from wslb.config.kubernetes.translate import ManifestOptions, translate

FIXTURES = ROOT / "tests" / "fixtures"
SEEDS = [str(FIXTURES / "seed-ingress.yaml"), str(FIXTURES / "seed-service.yaml")]


class Manifests(Proc):
    """``wslb serve -f ...`` with ports mapped to free ones."""

    def __init__(self, workdir: Path, files: list[str], extra: list[str]) -> None:
        self.workdir = workdir
        ready = workdir / f"ready-{len(list(workdir.glob('ready-*')))}.json"
        args = [sys.executable, "-m", "wslb", "serve"]
        for f in files:
            args += ["-f", f]
        args += ["--bind-address", "127.0.0.1", "--ready-file", str(ready), *extra]
        super().__init__(args, ready)

    def port(self, suffix: str) -> int:
        for name, info in self.info["listeners"].items():
            if name.endswith(suffix):
                return int(info["port"])
        raise KeyError(suffix)


@pytest.fixture
def serve_manifests(tmp_path: Path) -> Any:
    started: list[Manifests] = []

    def start(files: list[str], extra: list[str]) -> Manifests:
        proc = Manifests(tmp_path, files, extra)
        started.append(proc)
        proc.wait_ready()
        return proc

    yield start
    for p in started:
        p.stop()


def _certdir(tmp_path: Path, ca: trustme.CA, name: str, *hosts: str) -> Path:
    d = tmp_path / "certs"
    d.mkdir(exist_ok=True)
    cert = ca.issue_cert(*hosts)
    with open(d / f"{name}.crt", "wb") as fh:
        for pem in cert.cert_chain_pems:
            fh.write(pem.bytes())
    cert.private_key_pem.write_to_path(str(d / f"{name}.key"))
    return d


def _client_ctx(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


async def test_seed_manifests_run_as_they_are(
    serve_manifests: Callable[..., Manifests], backends: list[Proc], ca: trustme.CA, tmp_path: Path
) -> None:
    certs = _certdir(tmp_path, ca, "xxx-xxx-xxx", "ws.vuepilot.com")
    eps = ",".join(endpoints(backends))
    lb = serve_manifests(
        SEEDS,
        [
            "--endpoints",
            f"vuepilot/vuepilot-node={eps}",
            "--port-map",
            "80=0,443=0",
            "--certificates",
            str(certs),
            "--workers",
            "2",
        ],
    )
    http_port, https_port = lb.port("-http"), lb.port("-https")
    # HTTP answers 308 to https://ws.vuepilot.com/... with path and query kept
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}") as client:
        r = await client.get(
            "/socket.io/?EIO=4&transport=polling", headers={"Host": "ws.vuepilot.com"}
        )
    assert r.status_code == 308
    assert r.headers["location"] == "https://ws.vuepilot.com/socket.io/?EIO=4&transport=polling"

    base = f"https://127.0.0.1:{https_port}"
    ext = {"sni_hostname": "ws.vuepilot.com"}
    headers = {"Host": "ws.vuepilot.com"}
    ctx = _client_ctx(ca)
    async with httpx.AsyncClient(base_url=base, verify=ctx) as client:
        first = await client.get("/hello", headers=headers, extensions=ext)
        assert first.status_code == 200
        cookie = first.headers["set-cookie"]
        parts = {p.strip().split("=")[0].lower(): p.strip() for p in cookie.split(";")}
        assert "route" in parts and "expires" in parts and "httponly" in parts
        assert parts["max-age"] == "Max-Age=172800" and parts["path"] == "Path=/"
        route = parts["route"]
        server = first.headers["x-server"]
    # 50 requests carrying the cookie, each on a new connection (so both workers serve some)
    seen: Counter[str] = Counter()
    for _ in range(50):
        async with httpx.AsyncClient(base_url=base, verify=ctx) as client:
            r = await client.get("/x", headers={**headers, "Cookie": route}, extensions=ext)
            seen[r.headers["x-server"]] += 1
    assert seen == {server: 50}
    # ... and a WebSocket handshake carrying it
    async with connect(
        f"wss://ws.vuepilot.com:{https_port}/ws",
        host="127.0.0.1",  # connect here; Host and SNI say ws.vuepilot.com
        ssl=ctx,
        additional_headers={"Cookie": route},
        open_timeout=scaled(10),
    ) as ws:
        await ws.send("whoami")
        assert await ws.recv() == server
    # the preflight
    async with httpx.AsyncClient(base_url=base, verify=ctx) as client:
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
    assert pre.headers["access-control-allow-methods"] == "PUT, GET, POST, OPTIONS"
    assert pre.headers["access-control-allow-credentials"] == "true"


def _check(*extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wslb", "check", "-f", SEEDS[0], "-f", SEEDS[1], *extra],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


def test_seed_check_without_pods_refuses_the_cluster_ip() -> None:
    """The seed's Service (vuepilot-node, not in the files) with no pods given: wslb would
    dial its cluster DNS name, a virtual IP balanced again by kube-proxy (the seed's "Session
    ID unknown"); it refuses, says why and what to give it."""
    res = _check()
    assert res.returncode == 1, res.stderr
    (line,) = [ln for ln in res.stderr.splitlines() if ": error: " in ln]
    assert "seed-ingress.yaml:29: spec.rules[0].http.paths[0].backend: error:" in line
    assert "virtual IP that kube-proxy balances again behind wslb" in line
    for fix in (
        "clusterIP: None",
        "EndpointSlices",
        "--endpoints vuepilot/vuepilot-node=",
        "wslb controller",
    ):
        assert fix in line


def test_seed_check_warns(tmp_path: Path) -> None:
    res = _check("--endpoints", "vuepilot/vuepilot-node=10.0.0.5:8080")
    assert res.returncode == 0, res.stderr
    err = res.stderr
    assert (
        "seed-ingress.yaml:13: metadata.annotations.nginx.ingress.kubernetes.io/session-cookie-hash: warning"
        in err
    )
    assert (
        "seed-ingress.yaml:4: apiVersion: warning: extensions/v1beta1 Ingress is deprecated" in err
    )
    assert "seed-ingress.yaml:21:" in err and "echoes $http_origin with credentials" in err


def _secret(name: str, cert: trustme.LeafCert) -> dict[str, Any]:
    chain = b"".join(p.bytes() for p in cert.cert_chain_pems)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {"name": name, "namespace": "shop"},
        "data": {
            "tls.crt": base64.b64encode(chain).decode(),
            "tls.key": base64.b64encode(cert.private_key_pem.bytes()).decode(),
        },
    }


def _service(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": "web"}]},
    }


def _slice(service: str, index: int, port: int) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{service}-{index}",
            "namespace": "shop",
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port}],
        "endpoints": [
            {"addresses": ["127.0.0.1"], "conditions": {"ready": True}},
            {"addresses": ["127.0.0.2"], "conditions": {"ready": False}},
        ],
    }


async def test_v1_ingress_with_slices_sni_and_precedence(
    serve_manifests: Callable[..., Manifests], backends: list[Proc], ca: trustme.CA, tmp_path: Path
) -> None:
    a, b, c = (p.info["port"] for p in backends)
    path = lambda p, t, svc: {  # noqa: E731
        "path": p,
        "pathType": t,
        "backend": {"service": {"name": svc, "port": {"number": 80}}},
    }
    ingress = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": "shop", "namespace": "shop"},
        "spec": {
            "ingressClassName": "nginx",
            "tls": [
                {"hosts": ["a.example.com"], "secretName": "a-tls"},
                {"hosts": ["b.example.com"], "secretName": "b-tls"},
            ],
            "rules": [
                {
                    "host": "a.example.com",
                    "http": {
                        "paths": [
                            path("/api", "Prefix", "alpha"),
                            path("/api/exact", "Exact", "beta"),
                            path("/api/v2", "Prefix", "beta"),
                        ]
                    },
                },
                {"host": "b.example.com", "http": {"paths": [path("/", "Prefix", "beta")]}},
            ],
        },
    }
    docs = [
        ingress,
        _secret("a-tls", ca.issue_cert("a.example.com")),
        _secret("b-tls", ca.issue_cert("b.example.com")),
        _service("alpha"),
        _service("beta"),
        _slice("alpha", 0, a),
        _slice("alpha", 1, b),
        _slice("beta", 0, c),
    ]
    manifest = tmp_path / "shop.yaml"
    manifest.write_text(yaml.safe_dump_all(docs))
    lb = serve_manifests([str(manifest)], ["--port-map", "80=0,443=0", "--ingress-class", "nginx"])
    port = lb.port("https")
    ctx = _client_ctx(ca)
    for host in ("a.example.com", "b.example.com"):
        # SNI picks the certificate: verification against that host name passes
        async with httpx.AsyncClient(base_url=f"https://127.0.0.1:{port}", verify=ctx) as client:
            r = await client.get("/", headers={"Host": host}, extensions={"sni_hostname": host})
            assert r.status_code in (200, 404)

    async def server_for(p: str) -> str:
        async with httpx.AsyncClient(base_url=f"https://127.0.0.1:{port}", verify=ctx) as client:
            r = await client.get(
                p, headers={"Host": "a.example.com"}, extensions={"sni_hostname": "a.example.com"}
            )
            assert r.status_code == 200, (p, r.status_code)
            return str(r.headers["x-server"])

    assert await server_for("/api/exact") == "c"  # Exact beats Prefix
    assert await server_for("/api/exact/more") in ("a", "b")  # ... only for exactly that path
    assert await server_for("/api/v2/items") == "c"  # longest prefix wins
    assert await server_for("/api/v3") in ("a", "b")
    assert {await server_for("/api") for _ in range(6)} == {"a", "b"}  # ready endpoints only
    # plain HTTP to a TLS host redirects (ssl-redirect defaults to true with a tls section)
    resp = await raw_exchange(
        lb.port("http"), b"GET /api?x=1 HTTP/1.1\r\nHost: a.example.com\r\n\r\n"
    )
    assert status_of(resp) == 308 and b"Location: https://a.example.com/api?x=1\r\n" in resp


@pytest.mark.parametrize(("mode", "minimum"), [("balanced", 0.70), ("persistent", 1.0)])
async def test_affinity_survives_scaling_from_3_to_4_endpoints(
    mode: str,
    minimum: float,
    serve_manifests: Callable[..., Manifests],
    backends: list[Proc],
    tmp_path: Path,
) -> None:
    """1,000 sessions on 3 endpoints; a restart (or another replica) with a 4th endpoint and
    the same secret: balanced keeps >= 70 %, persistent keeps every live session."""
    ingress = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            "name": "app",
            "namespace": "default",
            "annotations": {
                "nginx.ingress.kubernetes.io/affinity": "cookie",
                "nginx.ingress.kubernetes.io/affinity-mode": mode,
                "nginx.ingress.kubernetes.io/session-cookie-name": "s",
            },
        },
        "spec": {
            "rules": [
                {
                    "http": {
                        "paths": [
                            {
                                "path": "/",
                                "pathType": "Prefix",
                                "backend": {"service": {"name": "app", "port": {"number": 80}}},
                            }
                        ]
                    }
                }
            ]
        },
    }
    manifest = tmp_path / "app.yaml"
    manifest.write_text(yaml.safe_dump(ingress))
    fourth = start_backend("d", tmp_path)
    try:
        three = ",".join(endpoints(backends))
        common = ["--port-map", "80=0,443=0", "--secret", "same-for-every-replica"]
        lb = serve_manifests([str(manifest)], [*common, "--endpoints", f"default/app={three}"])
        sessions: list[tuple[str, str]] = []
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{lb.port('http')}") as client:
            for _ in range(1000):
                client.cookies.clear()
                r = await client.get("/x")
                sessions.append((r.headers["set-cookie"].split(";")[0], r.headers["x-server"]))
        assert {s for _, s in sessions} == {"a", "b", "c"}
        lb.stop()
        four = ",".join(endpoints([*backends, fourth]))
        lb2 = serve_manifests([str(manifest)], [*common, "--endpoints", f"default/app={four}"])
        kept = 0
        moved_to: Counter[str] = Counter()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{lb2.port('http')}") as client:
            for cookie, server in sessions:
                r = await client.get("/x", headers={"Cookie": cookie})
                if r.headers["x-server"] == server:
                    kept += 1
                else:
                    moved_to[r.headers["x-server"]] += 1
        assert kept / len(sessions) >= minimum, (kept, moved_to)
        if mode == "balanced":
            assert set(moved_to) <= {"d"}  # sessions only move to the new endpoint
            assert kept < len(sessions)  # ... and some do: the new endpoint gets its share
    finally:
        fourth.stop()


async def test_from_the_api_no_ready_pod_is_503_and_draining_pods_take_no_sessions(
    wslb: Callable[..., Wslb], backends: list[Proc], tmp_path: Path
) -> None:
    """Controller mode's translation (``from_api``) served for real: a Service without
    EndpointSlices is a backend with no endpoints, which answers 503 with Retry-After (no
    DNS, no error); a serving but terminating pod is kept, draining, and gets no requests."""
    a, b, _c = (p.info["port"] for p in backends)

    def path(p: str, svc: str) -> dict[str, Any]:
        return {
            "path": p,
            "pathType": "Prefix",
            "backend": {"service": {"name": svc, "port": {"number": 80}}},
        }

    docs = [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": "shop", "namespace": "shop"},
            "spec": {"rules": [{"http": {"paths": [path("/gone", "gone"), path("/", "live")]}}]},
        },
        _service("gone"),
        _service("live"),
        {
            **_slice("live", 0, a),
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
        },
        {
            **_slice("live", 1, b),
            "endpoints": [
                {
                    "addresses": ["127.0.0.1"],
                    "conditions": {"ready": False, "serving": True, "terminating": True},
                }
            ],
        },
    ]
    manifest = tmp_path / "api.yaml"
    manifest.write_text(yaml.safe_dump_all(docs))
    objects, issues = load_objects([str(manifest)])
    assert not issues, issues
    config, issues = translate(
        objects,
        ManifestOptions(from_api=True, port_map={80: 0, 443: 0}, bind_address="127.0.0.1"),
    )
    assert not [i for i in issues if i.severity == "error"], issues
    by_name = {be.name: be for be in config.backends}
    assert by_name["shop/gone:80"].endpoints == ()
    assert {(e.port, e.draining) for e in by_name["shop/live:80"].endpoints} == {
        (a, False),
        (b, True),
    }
    lb = wslb(yaml.safe_load(render_yaml(config)))
    async with httpx.AsyncClient(base_url=lb.url("http"), timeout=30) as client:
        r = await client.get("/gone/x")
        assert r.status_code == 503 and r.headers["retry-after"], r
        servers = {(await client.get(f"/x{i}")).headers["x-server"] for i in range(10)}
        assert servers == {"a"}
