"""`make demo`: two echo backends and wslb in front of them, until Ctrl-C.

Ports: wslb on $WSLB_DEMO_PORT (default 8080), backends on the next free ports.
Everything started here is stopped here, by PID.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port} after {timeout}s")


def main() -> int:
    port = int(os.environ.get("WSLB_DEMO_PORT", "8080"))
    procs: list[subprocess.Popen[bytes]] = []
    workdir = Path(tempfile.mkdtemp(prefix="wslb-demo-"))
    try:
        ports = [free_port(), free_port()]
        for name, p in zip(("one", "two"), ports, strict=True):
            proc = subprocess.Popen(
                [sys.executable, str(HERE / "echo_backend.py"), "--name", name, "--port", str(p)]
            )
            procs.append(proc)
            wait_port(p, proc)
        config = yaml.safe_load((HERE / "wslb.yaml").read_text())
        config["listeners"][0]["port"] = port
        config["backends"][0]["endpoints"] = [f"127.0.0.1:{p}" for p in ports]
        config["backends"][0]["health"] = {"type": "tcp", "interval": "2s"}
        cfg = workdir / "wslb.yaml"
        cfg.write_text(yaml.safe_dump(config))
        ready = workdir / "ready.json"
        lb = subprocess.Popen(
            [sys.executable, "-m", "wslb", "serve", "-c", str(cfg), "--ready-file", str(ready)]
        )
        procs.append(lb)
        deadline = time.monotonic() + 20
        while not ready.exists():
            if lb.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("wslb did not start; see the messages above")
            time.sleep(0.05)
        bound = json.loads(ready.read_text())["listeners"]["web"]
        url = f"http://{bound['address']}:{bound['port']}"
        host = f"{bound['address']}:{bound['port']}"
        print(
            f"\nwslb is serving on {url} in front of two echo backends "
            f"(ports {ports[0]} and {ports[1]}).\n"
            f"  curl {url}/hello                  # backend one, then two, then one...\n"
            f"  python -m websockets ws://{host}/chat   # a WebSocket echo\n"
            "Press Ctrl-C to stop everything.\n",
            flush=True,
        )
        lb.wait()  # until Ctrl-C (or wslb stops on its own)
    except KeyboardInterrupt:
        pass
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        print("stopped.")
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupt)
    sys.exit(main())
