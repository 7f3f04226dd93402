"""Automatic certificates against a real ACME server: Pebble (Let's Encrypt's test server),
with its DNS pointed at 127.0.0.1, validating challenges on wslb's own listeners."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from cryptography import x509

from tests.integration.conftest import endpoints
from tests.support import pebble as pebble_support
from tests.support.metrics import admin_url, metrics_until, total
from tests.support.pebble import Pebble
from tests.support.procs import ROOT, Proc, Wslb, scaled

pytestmark = pytest.mark.skipif(not pebble_support.available(), reason="needs Debian's pebble")

HOSTS = ["a.wslb.test", "b.wslb.test"]


@pytest.fixture
def pebble(tmp_path: Path) -> Iterator[Pebble]:
    p = Pebble(tmp_path, trustme.CA())
    yield p
    p.stop()


def acme_config(
    pebble: Pebble | None, backends: list[Proc], storage: Path, challenge: str, **acme: Any
) -> dict[str, Any]:
    return {
        "listeners": [
            {"name": "web", "address": "127.0.0.1", "port": 0, "protocol": "http"},
            {
                "name": "tls",
                "address": "127.0.0.1",
                "port": 0,
                "protocol": "https",
                "tls": {"acme": True},
            },
        ],
        "backends": [
            {"name": "app", "endpoints": endpoints(backends[:1]), "health": {"enabled": False}}
        ],
        "routes": [{"backend": "app"}],
        "acme": {
            "directory": pebble.directory if pebble else "https://127.0.0.1:9/dir",
            "email": "ops@wslb.test",
            "storage": str(storage),
            "challenge": challenge,
            "ca_file": pebble.ca_file if pebble else None,
            "hosts": HOSTS,
            "retry_first": "500ms",
            "retry_max": "2s",
            "check_interval": "1s",
            **acme,
        },
    }


def served_certificate(port: int, host: str, root: str) -> x509.Certificate:
    """The certificate wslb serves for ``host``, verified against Pebble's root."""
    ctx = ssl.create_default_context(cafile=root)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=scaled(10)) as sock,
        ctx.wrap_socket(sock, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        tls.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := tls.recv(65536):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
        return x509.load_der_x509_certificate(der)


async def wait_logged(lb: Wslb, pattern: str, count: int = 1, timeout: float = 60) -> str:
    deadline = time.monotonic() + scaled(timeout)
    while len(re.findall(pattern, out := lb.output())) < count:
        assert time.monotonic() < deadline, f"{pattern!r} x{count} not logged:\n{out[-3000:]}"
        await asyncio.sleep(0.1)
    return out


def orders(out: str, host: str) -> int:
    """Orders the CA issued for ``host`` (attempts that failed before are not orders)."""
    return len(re.findall(rf"ACME order \S+ for {re.escape(host)}: issued", out))


def check(lb: Wslb) -> str:
    """``wslb check`` on the running configuration: what it says about ACME."""
    res = subprocess.run(
        [sys.executable, "-m", "wslb", "check", "-c", str(lb.config_path)],
        capture_output=True,
        text=True,
        timeout=scaled(30),
        check=True,
        cwd=ROOT,
    )
    return res.stdout


@pytest.mark.parametrize("challenge", ["http-01", "tls-alpn-01"])
async def test_two_hosts_issued_served_and_reused_after_a_restart(
    challenge: str,
    wslb: Callable[..., Wslb],
    backends: list[Proc],
    pebble: Pebble,
    tmp_path: Path,
) -> None:
    storage = tmp_path / "acme"
    config = acme_config(pebble, backends, storage, challenge)
    lb = wslb(config)
    waiting = check(lb)
    assert all(f"acme: {h}: waiting for a certificate" in waiting for h in HOSTS), waiting
    # wslb is up first (Pebble needs its ports): its first attempts fail and are retried
    pebble.start(lb.port("web"), lb.port("tls"))
    for host in HOSTS:
        await wait_logged(lb, rf"ACME certificate {re.escape(host)} .* serves")
    issued = check(lb)
    assert all(f"acme: {h}: issued ({h})" in issued for h in HOSTS), issued
    root = pebble.root()
    serials = {}
    for host in HOSTS:
        cert = served_certificate(lb.port("tls"), host, root)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert names.get_values_for_type(x509.DNSName) == [host]
        serials[host] = cert.serial_number
    out = lb.output()
    assert all(orders(out, h) == 1 for h in HOSTS), out
    assert "Traceback" not in out
    # the account, keys and certificates are on disk, private
    for path in [storage / "account.json", *storage.glob("certificates/*/key.pem")]:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    assert not list(storage.glob("challenges/*/*")), "challenges left behind"
    # A restart takes the stored account and certificates: no order.
    lb.stop()
    again = wslb(config)
    for host in HOSTS:
        await wait_logged(again, rf"ACME certificate {re.escape(host)} .* serves")
    for host in HOSTS:
        assert served_certificate(again.port("tls"), host, root).serial_number == serials[host]
    assert "ACME order" not in again.output() and "ACME account" not in again.output()


async def test_renewal_before_expiry_and_recovery_from_failed_orders(
    wslb: Callable[..., Wslb], backends: list[Proc], pebble: Pebble, tmp_path: Path
) -> None:
    """Pebble issues 10-second certificates and rejects 30% of the good nonces: wslb renews
    the certificate with a third of its life left, retries the attempts that fail, and the
    new certificate serves new connections while the old one kept serving until then."""
    config = acme_config(pebble, backends, tmp_path / "acme", "http-01", hosts=HOSTS[:1])
    lb = wslb(config, extra=["--admin", "127.0.0.1:0"])
    pebble.start(lb.port("web"), lb.port("tls"), validity=10, env={"PEBBLE_WFE_NONCEREJECT": "30"})
    host = HOSTS[0]
    await wait_logged(lb, rf"ACME certificate {re.escape(host)} .* serves")
    root = pebble.root()
    first = served_certificate(lb.port("tls"), host, root)
    # a connection in use before the renewal (keep-alive: a request now, one after) must
    # outlive it (a connection opened and left without a request would meet header_timeout)
    ctx = ssl.create_default_context(cafile=root)
    kept = ctx.wrap_socket(
        socket.create_connection(("127.0.0.1", lb.port("tls")), timeout=scaled(10)),
        server_hostname=host,
    )
    kept.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = kept.recv(1)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 200 "), head
    length = int(re.search(rb"(?i)content-length: *(\d+)", head)[1])  # type: ignore[index]
    while length:
        length -= len(kept.recv(length))
    out = await wait_logged(lb, rf"ACME certificate {re.escape(host)} .* serves", count=2)
    assert "ACME renewal of" in out and orders(out, host) >= 2
    later = served_certificate(lb.port("tls"), host, root)
    assert later.serial_number != first.serial_number
    assert later.not_valid_after_utc > first.not_valid_after_utc
    kept.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    answer = b""
    while chunk := kept.recv(65536):
        answer += chunk
    kept.close()
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:100]
    print(
        f"\nissued: {orders(out, host)}, renewal attempts: {out.count('ACME renewal of')}, "
        f"failed attempts retried: {out.count(' failed: ')}"
    )
    assert out.count(" failed: ") >= 1  # the attempts before Pebble was up, at least
    assert "Traceback" not in out

    # every order, renewal and failure is counted (workers publish counters every moment)
    def orders_of(samples: dict[Any, float], kind: str, result: str) -> float:
        return total(samples, "wslb_acme_orders_total", kind=kind, result=result)

    samples = await metrics_until(
        admin_url(lb),
        lambda s: orders_of(s, "order", "ok") == 1 and orders_of(s, "renewal", "ok") >= 1,
    )
    assert orders_of(samples, "order", "ok") == 1 and orders_of(samples, "renewal", "ok") >= 1
    assert orders_of(samples, "order", "failed") >= 1


async def test_two_workers_make_exactly_one_order_per_host(
    wslb: Callable[..., Wslb], backends: list[Proc], pebble: Pebble, tmp_path: Path
) -> None:
    config = acme_config(pebble, backends, tmp_path / "acme", "http-01")
    config["server"] = {"workers": 2}
    lb = wslb(config)
    pebble.start(lb.port("web"), lb.port("tls"))
    # each worker says it serves each certificate: 2 x 2 lines
    out = await wait_logged(lb, r"ACME certificate \S+ .* serves", count=4)
    for host in HOSTS:
        assert orders(out, host) == 1, out
    root = pebble.root()
    # connections land on both workers (SO_REUSEPORT): every one verifies
    for _ in range(10):
        for host in HOSTS:
            served_certificate(lb.port("tls"), host, root)


async def test_tls_alpn_challenge_goes_only_to_the_validation_handshake(
    wslb: Callable[..., Wslb], backends: list[Proc], tmp_path: Path
) -> None:
    """While a TLS-ALPN-01 challenge is pending for a host, a handshake offering acme-tls/1
    gets the validation certificate and that protocol; every other handshake for the host
    gets its usual certificate (the one in the storage)."""
    from wslb.acme.alpn import ID_PE_ACME_IDENTIFIER, validation_certificate
    from wslb.acme.storage import Storage
    from wslb.config.certs import self_signed

    host = HOSTS[0]
    storage = Storage(str(tmp_path / "acme"))
    storage.prepare()
    chain, key = self_signed([host])
    storage.save_certificate(host, (host,), chain.encode(), key.encode())
    storage.put_tls_alpn01(host, validation_certificate(host, "token.thumbprint"))
    # the directory is never reached: the storage has the certificate
    config = acme_config(None, backends, tmp_path / "acme", "tls-alpn-01", hosts=[host])
    lb = wslb(config)

    def handshake(alpn: list[str]) -> tuple[x509.Certificate, str | None]:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        ctx.set_alpn_protocols(alpn)
        with (
            socket.create_connection(("127.0.0.1", lb.port("tls")), timeout=scaled(10)) as s,
            ctx.wrap_socket(s, server_hostname=host) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
            assert der is not None
            return x509.load_der_x509_certificate(der), tls.selected_alpn_protocol()

    cert, proto = handshake(["acme-tls/1"])
    assert proto == "acme-tls/1"
    ext = cert.extensions.get_extension_for_oid(ID_PE_ACME_IDENTIFIER)
    assert ext.critical
    stored = x509.load_pem_x509_certificate(chain.encode())
    for alpn in (["h2", "http/1.1"], ["http/1.1"], []):
        cert, proto = handshake(alpn)
        assert cert.serial_number == stored.serial_number, alpn
        assert proto != "acme-tls/1"
    # once the challenge is gone, acme-tls/1 gets no validation certificate
    storage.drop_tls_alpn01(host)
    cert, proto = handshake(["acme-tls/1"])
    assert cert.serial_number == stored.serial_number
