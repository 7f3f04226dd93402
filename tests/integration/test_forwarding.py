"""Forwarding rules: http->http, https->http, https->https, tcp->tcp, with real httpx clients."""

from __future__ import annotations

import hashlib
import os
import ssl
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.integration.conftest import endpoints, http_config
from tests.support.procs import Proc, Wslb

SIZES = [0, 1, 10 * 1024 * 1024]


def _pattern(n: int) -> bytes:
    block = bytes(range(256)) * 256
    return (block * (n // len(block) + 1))[:n]


def _rule_config(
    rule: str, eps: list[str], tls_eps: list[str], server_cert: tuple[str, str]
) -> dict[str, Any]:
    entry, target = rule.split("->")
    tls = {"certificate": server_cert[0], "key": server_cert[1]}
    backend: dict[str, Any] = {"protocol": target}
    listener: dict[str, Any] = {"client": {"max_body_size": "64MiB"}}
    if entry == "https":
        listener["tls"] = tls
    if target == "https":
        return http_config(tls_eps, backend=backend, listener=listener, protocol=entry)
    if entry == "tcp":
        cfg = {
            "listeners": [
                {
                    "name": "web",
                    "address": "127.0.0.1",
                    "port": 0,
                    "protocol": "tcp",
                    "backend": "raw",
                }
            ],
            "backends": [
                {"name": "raw", "protocol": "tcp", "endpoints": eps, "health": {"enabled": False}}
            ],
        }
        return cfg
    return http_config(eps, backend=backend, listener=listener, protocol=entry)


@pytest.mark.parametrize("rule", ["http->http", "https->http", "https->https", "tcp->tcp"])
async def test_bodies_arrive_intact(
    rule: str,
    wslb: Callable[..., Wslb],
    backends: list[Proc],
    tls_backend: Proc,
    server_cert: tuple[str, str],
    ca_file: str,
) -> None:
    config = _rule_config(rule, endpoints(backends[:1]), endpoints([tls_backend]), server_cert)
    lb = wslb(config)
    base = lb.url("web", "https" if rule.startswith("https") else "http")
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca_file)
    async with httpx.AsyncClient(base_url=base, verify=verify, timeout=60) as client:
        for size in SIZES:
            # download: Content-Length and chunked
            for chunked in ("0", "1"):
                r = await client.get(f"/bytes/{size}", params={"chunked": chunked})
                assert r.status_code == 200
                assert len(r.content) == size
                assert r.content == _pattern(size)
            # upload
            body = os.urandom(size)
            r = await client.post("/upload", content=body)
            assert r.status_code == 200, r.text
            echo = r.json()
            assert echo["body_size"] == size
            assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()

            # upload with chunked framing (a generator has no length)
            async def gen(data: bytes = body) -> Any:
                for i in range(0, len(data), 100_000):
                    yield data[i : i + 100_000]

            r = await client.post("/upload", content=gen())
            assert r.json()["body_sha256"] == hashlib.sha256(body).hexdigest()
    if rule != "tcp->tcp":
        assert r.json()["headers"]  # went through the HTTP proxy
        fwd = dict(r.json()["headers"])
        assert fwd["x-forwarded-proto"] == ("https" if rule.startswith("https") else "http")
        assert fwd["x-forwarded-for"] == "127.0.0.1"
        assert fwd["x-forwarded-port"] == str(lb.port("web"))


async def test_backend_tls_verification(
    wslb: Callable[..., Wslb], tls_backend: Proc, ca_file: str, tmp_path: Any
) -> None:
    """verify: true with the right CA works; with the wrong CA every connect fails: 502."""
    eps = endpoints([tls_backend])
    good = wslb(
        http_config(
            eps,
            backend={
                "protocol": "https",
                "tls": {"verify": True, "ca_file": ca_file, "server_name": "localhost"},
            },
        )
    )
    async with httpx.AsyncClient(base_url=good.url("web")) as client:
        r = await client.get("/x")
        assert r.status_code == 200 and r.json()["server"] == "tls"
    import trustme

    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    bad = wslb(
        http_config(
            eps,
            backend={
                "protocol": "https",
                "tls": {"verify": True, "ca_file": str(other_ca), "server_name": "localhost"},
            },
        )
    )
    async with httpx.AsyncClient(base_url=bad.url("web")) as client:
        r = await client.get("/x")
        assert r.status_code == 502
    assert "certificate verify failed" in bad.output().lower()


async def test_https_health_checks_and_route_timeouts(
    wslb: Callable[..., Wslb], tls_backend: Proc, backends: list[Proc]
) -> None:
    """An https health check keeps a TLS endpoint in; a route's own timeouts override the
    backend's (here a short read timeout on one path only)."""
    cfg = http_config(
        endpoints([tls_backend]),
        backend={"protocol": "https", "health": {"type": "https", "path": "/", "interval": 0.2}},
    )
    cfg["routes"] = [
        {"backend": "app", "path": "/slow", "timeouts": {"read": 0.3}},
        {"backend": "app"},
    ]
    lb = wslb(cfg)
    async with httpx.AsyncClient(base_url=lb.url("web"), timeout=30) as client:
        assert (await client.get("/slow", params={"delay": "1"})).status_code == 504
        assert (await client.get("/other", params={"delay": "0.6"})).status_code == 200
    assert "unhealthy" not in lb.output()
