"""Processes under test: backends and wslb itself, started on free loopback ports.

Readiness is a file the process writes once it serves; waiting polls for it, bounded. Processes
are ended by the PID we started, never by name.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
FACTOR = float(os.environ.get("WSLB_TEST_TIMEOUT_FACTOR", "1"))


def scaled(seconds: float) -> float:
    return seconds * FACTOR


class Proc:
    """A started process with a log file; ``stop()`` ends it by PID."""

    def __init__(
        self,
        args: list[str],
        ready: Path,
        env: dict[str, str] | None = None,
        nofile: int | None = None,
    ) -> None:
        self.ready = ready
        self.log_path = ready.with_suffix(".log")
        self.log = open(self.log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            args,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {}), "PYTHONPATH": str(ROOT)},
            cwd=str(ROOT),
            # a file-descriptor limit (soft and hard) for the process alone
            preexec_fn=None if nofile is None else lambda: _limit_fds(nofile),
        )
        self.info: dict[str, Any] = {}

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + scaled(timeout)
        while time.monotonic() < deadline:
            if self.ready.exists():
                self.info = json.loads(self.ready.read_text())
                return self.info
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.proc.args} exited with {self.proc.returncode}:\n{self.output()}"
                )
            time.sleep(0.02)
        raise TimeoutError(f"{self.proc.args} not ready after {timeout}s:\n{self.output()}")

    def wait_output(self, text: str, timeout: float = 10) -> str:
        """Block until ``text`` appears in the process's log (bounded); return the log."""
        deadline = time.monotonic() + scaled(timeout)
        while time.monotonic() < deadline:
            out = self.output()
            if text in out:
                return out
            time.sleep(0.05)
        raise TimeoutError(f"{text!r} not logged within {timeout}s:\n{self.output()}")

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def stop(self, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(scaled(timeout))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def start_backend(
    name: str,
    workdir: Path,
    tls: tuple[str, str] | None = None,
    port: int = 0,
    server: str = "uvicorn",
) -> Proc:
    ready = workdir / f"backend-{name}-{time.monotonic_ns()}.json"
    args = [
        sys.executable,
        "-m",
        "tests.support.backend",
        "--name",
        name,
        "--ready-file",
        str(ready),
    ]
    if port:
        args += ["--port", str(port)]
    if tls:
        args += ["--tls-cert", tls[0], "--tls-key", tls[1]]
    if server != "uvicorn":
        args += ["--server", server]
    proc = Proc(args, ready)
    proc.wait_ready()
    return proc


def _limit_fds(n: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))


class Wslb(Proc):
    def __init__(
        self,
        config: dict[str, Any],
        workdir: Path,
        extra: list[str] | None = None,
        nofile: int | None = None,
    ):
        fd, cfg = tempfile.mkstemp(prefix="wslb-", suffix=".yaml", dir=workdir)
        with os.fdopen(fd, "w") as fh:
            yaml.safe_dump(config, fh)
        self.config_path = Path(cfg)
        ready = Path(cfg).with_suffix(".ready.json")
        args = [
            sys.executable,
            "-m",
            "wslb",
            "serve",
            "-c",
            cfg,
            "--ready-file",
            str(ready),
            "--log-level",
            "info",
            *(extra or []),
        ]
        super().__init__(args, ready, nofile=nofile)

    def port(self, listener: str) -> int:
        return int(self.info["listeners"][listener]["port"])

    def url(self, listener: str, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port(listener)}"
