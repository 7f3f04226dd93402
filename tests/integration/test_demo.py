"""`make demo` as a newcomer runs it: the chat and the dashboard's URLs printed, both answering,
no warning on the terminal (the pods' uvicorn once printed a deprecation warning per pod), and
Ctrl-C stopping everything it started."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import httpx
import psutil
import socketio

from tests.support.chat import free_port
from tests.support.procs import ROOT, scaled


async def test_make_demo_prints_both_urls_and_no_warning() -> None:
    env = {
        **os.environ,
        "WSLB_DEMO_PORT": str(free_port()),
        "WSLB_DEMO_ADMIN_PORT": str(free_port()),
        "PYTHONWARNINGS": "default",  # what a deprecation would print, printed
    }
    demo = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "examples" / "chat" / "demo.py"),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as in a terminal
    )
    started: list[psutil.Process] = []
    try:
        assert demo.stdout is not None
        lines: list[str] = []
        async with asyncio.timeout(scaled(60)):
            while not lines or "Ctrl-C" not in lines[-1]:
                line = (await demo.stdout.readline()).decode()
                assert line, "".join(lines)
                lines.append(line)
        text = "".join(lines)
        chat = f"http://127.0.0.1:{env['WSLB_DEMO_PORT']}/"
        dashboard = f"http://127.0.0.1:{env['WSLB_DEMO_ADMIN_PORT']}/"
        assert f"The chat is on {chat}" in text and "dashboard (sessions" in text, text
        assert dashboard in text, text
        started = psutil.Process(demo.pid).children(recursive=True)
        async with httpx.AsyncClient() as http:
            assert (await http.get(chat)).status_code == 200
            assert (await http.get(dashboard)).status_code == 200
        sio = socketio.AsyncClient()  # a session through the pods' WebSocket implementation
        await sio.connect(chat, wait_timeout=scaled(10))
        assert sio.transport() == "websocket"
        await sio.disconnect()
    finally:
        demo.send_signal(signal.SIGINT)
        async with asyncio.timeout(scaled(60)):
            _, raw = await demo.communicate()
    err = raw.decode()
    assert demo.returncode == 0
    assert "warning" not in err.lower(), err[-2000:]
    assert not [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
