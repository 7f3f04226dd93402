"""PROXY protocol v1/v2: sent to backends byte-exact, accepted from a trusted balancer in front."""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
from collections.abc import Callable
from typing import Any

import pytest

from tests.integration.conftest import http_config
from tests.support.procs import Wslb, scaled
from tests.support.raw import RecordingBackend

SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def _expected(version: str, src: tuple[str, int], dst: tuple[str, int]) -> bytes:
    if version == "v1":
        return f"PROXY TCP4 {src[0]} {dst[0]} {src[1]} {dst[1]}\r\n".encode()
    body = socket.inet_aton(src[0]) + socket.inet_aton(dst[0]) + struct.pack("!HH", src[1], dst[1])
    return SIG + b"\x21\x11" + struct.pack("!H", len(body)) + body


async def _closed_without_answer(reader: asyncio.StreamReader) -> bool:
    """True when the peer closed (or reset) without sending a byte."""
    try:
        async with asyncio.timeout(scaled(10)):
            return await reader.read() == b""
    except ConnectionResetError:
        return True


def _tcp_config(port: int, backend: dict[str, Any], listener: dict[str, Any]) -> dict[str, Any]:
    return {
        "listeners": [
            {"name": "web", "address": "127.0.0.1", "port": 0, "protocol": "tcp", "backend": "raw"}
            | listener
        ],
        "backends": [
            {
                "name": "raw",
                "protocol": "tcp",
                "endpoints": [f"127.0.0.1:{port}"],
                "health": {"enabled": False},
            }
            | backend
        ],
    }


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("entry", ["http", "tcp"])
async def test_proxy_header_arrives_byte_exact(
    version: str, entry: str, wslb: Callable[..., Wslb]
) -> None:
    async with RecordingBackend() as backend:
        if entry == "http":
            cfg = http_config([f"127.0.0.1:{backend.port}"], backend={"proxy_protocol": version})
        else:
            cfg = _tcp_config(backend.port, {"proxy_protocol": version}, {})
        lb = wslb(cfg)
        reader, writer = await asyncio.open_connection("127.0.0.1", lb.port("web"))
        client = writer.get_extra_info("sockname")
        writer.write(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        await writer.drain()
        async with asyncio.timeout(scaled(10)):
            await reader.readuntil(b"ok")
        writer.close()
        data = bytes(backend.connections[0].data)
    want = _expected(version, (client[0], client[1]), ("127.0.0.1", lb.port("web")))
    assert data.startswith(want)
    assert data[len(want) : len(want) + 8] == b"GET /x H"


@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_proxy_header_accepted_from_trusted_balancer(
    version: str, wslb: Callable[..., Wslb]
) -> None:
    """A balancer in front sends PROXY: the client address it names reaches the backend,
    as X-Forwarded-For and in the PROXY header wslb sends on."""
    async with RecordingBackend() as backend:
        lb = wslb(
            http_config(
                [f"127.0.0.1:{backend.port}"],
                backend={"proxy_protocol": "v1"},
                listener={"proxy_protocol": True, "trusted_proxies": ["127.0.0.1/32"]},
            )
        )
        reader, writer = await asyncio.open_connection("127.0.0.1", lb.port("web"))
        header = _expected(version, ("203.0.113.7", 5555), ("198.51.100.1", 443))
        # header and request in one segment, as balancers send them
        writer.write(header + b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        await writer.drain()
        async with asyncio.timeout(scaled(10)):
            await reader.readuntil(b"ok")
        writer.close()
        data = bytes(backend.connections[0].data)
    assert data.startswith(b"PROXY TCP4 203.0.113.7 198.51.100.1 5555 443\r\n")
    assert b"X-Forwarded-For: 203.0.113.7\r\n" in data


async def test_proxy_header_before_tls(
    wslb: Callable[..., Wslb], server_cert: tuple[str, str], ca_file: str
) -> None:
    async with RecordingBackend() as backend:
        lb = wslb(
            http_config(
                [f"127.0.0.1:{backend.port}"],
                protocol="https",
                listener={
                    "proxy_protocol": True,
                    "tls": {"certificate": server_cert[0], "key": server_cert[1]},
                },
            )
        )
        sock = socket.create_connection(("127.0.0.1", lb.port("web")))
        sock.sendall(_expected("v2", ("192.0.2.44", 1234), ("127.0.0.1", 443)))
        sock.setblocking(False)
        ctx = ssl.create_default_context(cafile=ca_file)
        reader, writer = await asyncio.open_connection(
            sock=sock, ssl=ctx, server_hostname="localhost"
        )
        writer.write(b"GET /tls HTTP/1.1\r\nHost: a\r\n\r\n")
        await writer.drain()
        async with asyncio.timeout(scaled(10)):
            await reader.readuntil(b"ok")
        writer.close()
        data = bytes(backend.connections[0].data)
    assert b"X-Forwarded-For: 192.0.2.44\r\n" in data
    assert b"X-Forwarded-Proto: https\r\n" in data


async def test_missing_or_untrusted_proxy_header_is_refused(wslb: Callable[..., Wslb]) -> None:
    async with RecordingBackend() as backend:
        lb = wslb(http_config([f"127.0.0.1:{backend.port}"], listener={"proxy_protocol": True}))
        reader, writer = await asyncio.open_connection("127.0.0.1", lb.port("web"))
        writer.write(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")  # no PROXY header
        await writer.drain()
        assert await _closed_without_answer(reader)
        writer.close()

        lb2 = wslb(
            http_config(
                [f"127.0.0.1:{backend.port}"],
                listener={"proxy_protocol": True, "trusted_proxies": ["10.0.0.0/8"]},
            )
        )
        reader, writer = await asyncio.open_connection("127.0.0.1", lb2.port("web"))
        writer.write(
            _expected("v1", ("1.2.3.4", 1), ("5.6.7.8", 2)) + b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
        )
        await writer.drain()
        assert await _closed_without_answer(reader)
        writer.close()
        assert backend.connections == []
    assert "PROXY" in lb.output() and "untrusted" in lb2.output()
