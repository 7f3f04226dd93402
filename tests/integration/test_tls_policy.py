"""The TLS policy of wslb's listeners, as sslyze (an outside scanner) sees it."""

from __future__ import annotations

import json
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
    assert {"X25519", "secp256r1", "secp384r1"} <= curves, curves
