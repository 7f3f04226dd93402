"""Pebble, Let's Encrypt's ACME test server (Debian's ``pebble`` package), on loopback, with
``pebble-challtestsrv`` as its DNS server so that every test host resolves to 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import ssl
import time
import urllib.request
from pathlib import Path
from typing import Any

import trustme

from tests.support.chat import free_port
from tests.support.procs import Proc, scaled


def available() -> bool:
    return shutil.which("pebble") is not None and shutil.which("pebble-challtestsrv") is not None


class Pebble:
    """``directory`` is the ACME directory URL; ``ca_file`` trusts Pebble's own HTTPS; ``root()``
    is the root its certificates chain to (a new one every start)."""

    def __init__(self, workdir: Path, ca: trustme.CA) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.management = free_port()
        self.dns = free_port()
        self.directory = f"https://127.0.0.1:{self.port}/dir"
        cert = ca.issue_cert("127.0.0.1", "localhost")
        self.ca_file = str(workdir / "pebble-ca.pem")
        ca.cert_pem.write_to_path(self.ca_file)
        self.cert_file = str(workdir / "pebble-cert.pem")
        self.key_file = str(workdir / "pebble-key.pem")
        cert.cert_chain_pems[0].write_to_path(self.cert_file)
        cert.private_key_pem.write_to_path(self.key_file)
        self.procs: list[Proc] = []
        self.pebble: Proc | None = None

    def start(
        self,
        http_port: int,
        tls_port: int,
        validity: int | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        """Start (or restart) Pebble validating challenges on wslb's ports."""
        if not any(p for p in self.procs if p is not self.pebble):
            dns = Proc(
                [
                    "pebble-challtestsrv",
                    "-defaultIPv4",
                    "127.0.0.1",
                    "-defaultIPv6",
                    "",
                    "-dns01",
                    f"127.0.0.1:{self.dns}",
                    "-http01",
                    "",
                    "-https01",
                    "",
                    "-tlsalpn01",
                    "",
                    "-management",
                    f"127.0.0.1:{free_port()}",
                ],
                self.workdir / "challtestsrv.ready",
            )
            self.procs.append(dns)
            dns.wait_output("Starting", timeout=20)
        config: dict[str, Any] = {
            "listenAddress": f"127.0.0.1:{self.port}",
            "managementListenAddress": f"127.0.0.1:{self.management}",
            "certificate": self.cert_file,
            "privateKey": self.key_file,
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
        if validity is not None:
            config["certificateValidityPeriod"] = validity
        path = self.workdir / "pebble-config.json"
        path.write_text(json.dumps({"pebble": config}))
        self.pebble = Proc(
            ["pebble", "-config", str(path), "-dnsserver", f"127.0.0.1:{self.dns}"],
            self.workdir / f"pebble-{time.monotonic_ns()}.ready",
            env={"PEBBLE_VA_NOSLEEP": "1", **(env or {})},
        )
        self.procs.append(self.pebble)
        self.pebble.wait_output("ACME directory available", timeout=30)

    def stop_pebble(self) -> None:
        if self.pebble is not None:
            self.pebble.stop()
            self.procs.remove(self.pebble)
            self.pebble = None

    def _get(self, path: str) -> bytes:
        ctx = ssl.create_default_context(cafile=self.ca_file)
        url = f"https://127.0.0.1:{self.management}{path}"
        with urllib.request.urlopen(url, context=ctx, timeout=scaled(10)) as resp:
            data: bytes = resp.read()
            return data

    def root(self) -> str:
        """Pebble's root certificate (PEM) written to a file: what to verify wslb against."""
        path = self.workdir / f"pebble-root-{os.getpid()}.pem"
        path.write_bytes(self._get("/roots/0"))
        return str(path)

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()
        self.procs.clear()
