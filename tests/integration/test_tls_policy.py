"""The TLS policy of wslb's listeners, as sslyze (an outside scanner) sees it."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import endpoints, http_config
from tests.support.procs import Proc, Wslb, scaled

pytest.importorskip("sslyze")


def _scan(port: int, out: Path) -> dict[str, Any]:
    res = subprocess.run(
        [sys.executable, "-m", "sslyze", f"127.0.0.1:{port}", f"--json_out={out}", "--quiet"],
        capture_output=True,
        text=True,
        timeout=scaled(120),
        check=False,
    )
    # sslyze exits non-zero when the test certificate fails Mozilla's checks (trustme's CA is
    # not a public one, its life span is long): those are the certificate's, not the policy's
    data = json.loads(out.read_text())
    (server,) = data["server_scan_results"]
    assert server["scan_status"] == "COMPLETED", res.stderr[-2000:]
    result: dict[str, Any] = server["scan_result"]
    return result


def _accepted(result: dict[str, Any], key: str) -> list[str]:
    return [c["cipher_suite"]["name"] for c in result[key]["result"]["accepted_cipher_suites"]]


@pytest.mark.parametrize("min_version", ["1.2", "1.3"])
def test_sslyze_finds_no_old_protocol_no_weak_suite_no_known_vulnerability(
    min_version: str,
    wslb: Callable[..., Wslb],
    backends: list[Proc],
    server_cert: tuple[str, str],
    tmp_path: Path,
) -> None:
    tls = {"certificate": server_cert[0], "key": server_cert[1], "min_version": min_version}
    lb = wslb(http_config(endpoints(backends[:1]), listener={"tls": tls}, protocol="https"))
    result = _scan(lb.port("web"), tmp_path / "scan.json")
    for old in ("ssl_2_0", "ssl_3_0", "tls_1_0", "tls_1_1"):
        assert _accepted(result, f"{old}_cipher_suites") == [], old
    tls12 = _accepted(result, "tls_1_2_cipher_suites")
    tls13 = _accepted(result, "tls_1_3_cipher_suites")
    assert tls13, "TLS 1.3 must be offered"
    if min_version == "1.3":
        assert tls12 == []
    else:
        assert tls12, "TLS 1.2 must be offered"
    for suite in tls12 + tls13:
        assert "CBC" not in suite and "RC4" not in suite and "3DES" not in suite, suite
        assert "GCM" in suite or "CHACHA20" in suite, suite  # AEAD only
        assert suite.startswith(("TLS_ECDHE_", "TLS_DHE_", "TLS_AES_", "TLS_CHACHA20_")), suite
    checks = {
        "heartbleed": ("is_vulnerable_to_heartbleed", False),
        "openssl_ccs_injection": ("is_vulnerable_to_ccs_injection", False),
        "tls_compression": ("supports_compression", False),
        "tls_fallback_scsv": ("supports_fallback_scsv", True),
    }
    for plugin, (field, want) in checks.items():
        assert result[plugin]["result"][field] is want, (plugin, result[plugin])
    assert result["robot"]["result"]["robot_result"].startswith("NOT_VULNERABLE")
    reneg = result["session_renegotiation"]["result"]
    assert reneg["is_vulnerable_to_client_renegotiation_dos"] is False
    curves = {c["name"] for c in result["elliptic_curves"]["result"]["supported_curves"]}
    assert curves == {"X25519", "secp256r1", "secp384r1"}, curves  # no X448, no P-521


def _handshake(ctx: ssl.SSLContext, port: int, session: ssl.SSLSession | None) -> ssl.SSLSocket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=scaled(10))
    tls = ctx.wrap_socket(sock, server_hostname="localhost", session=session)
    # TLS 1.3 tickets come after the handshake: a request and its answer bring them in
    tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    while tls.recv(65536):
        pass
    return tls


def test_session_tickets_resume_across_replicas_with_the_same_secret(
    wslb: Callable[..., Wslb],
    backends: list[Proc],
    server_cert: tuple[str, str],
    ca_file: str,
) -> None:
    """Ticket keys come from server.secret and the rotation period: a ticket from one replica
    resumes on another given the same secret, and not on one with another secret."""
    tls = {"certificate": server_cert[0], "key": server_cert[1]}

    def replica(secret: str) -> Wslb:
        config = http_config(endpoints(backends[:1]), listener={"tls": tls}, protocol="https")
        config["server"] = {"secret": secret}
        return wslb(config)

    a, b, other = replica("s" * 32), replica("s" * 32), replica("t" * 32)
    client = ssl.create_default_context(cafile=ca_file)  # one client, one session cache
    first = _handshake(client, a.port("web"), None)
    assert first.session is not None and first.session.has_ticket
    again = _handshake(client, b.port("web"), first.session)
    assert again.session_reused, "a ticket of replica a did not resume on replica b"
    fresh = _handshake(client, other.port("web"), first.session)
    assert not fresh.session_reused, "a ticket resumed on a replica with another secret"
    for t in (first, again, fresh):
        t.close()
