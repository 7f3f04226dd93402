"""Outside Kubernetes the affinity key is made once and kept in a file (--secret-file, default
under WSLB_STATE_DIR): a restarted wslb, or a second one started the same way, honours the
cookies the first one set."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.integration.conftest import endpoints, http_config
from tests.support.procs import ROOT, Proc, Wslb
from wslb.cli import secret_from_file


def test_secret_file_made_once_private_and_shared(tmp_path: Path) -> None:
    path = tmp_path / "state" / "secret"
    with ThreadPoolExecutor(8) as pool:
        keys = set(pool.map(lambda _: secret_from_file(str(path)), range(8)))
    assert len(keys) == 1 and len(keys.pop()) == 64
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert not [p for p in path.parent.iterdir() if p.name != "secret"]  # no leftovers


async def _pin(lb: Wslb, cookie: str | None = None) -> httpx.Response:
    async with httpx.AsyncClient(base_url=lb.url("web")) as client:
        headers = {"Cookie": cookie} if cookie else {}
        return await client.get("/x", headers=headers)


async def test_a_restart_keeps_the_cookies(
    wslb: Callable[..., Wslb], backends: list[Proc], tmp_path: Path
) -> None:
    config = http_config(
        endpoints(backends), route={"affinity": {"name": "pin", "mode": "persistent"}}
    )
    secret = tmp_path / "key"
    first = wslb(config, extra=["--secret-file", str(secret)])
    r = await _pin(first)
    cookie = r.headers["set-cookie"].split(";")[0]
    server = r.headers["x-server"]
    first.stop()
    again = wslb(config, extra=["--secret-file", str(secret)])
    for _ in range(10):
        r = await _pin(again, cookie)
        assert r.headers["x-server"] == server
        assert "set-cookie" not in r.headers  # the cookie's signature holds: not re-pinned
    # the control: with another key the same cookie is not honoured (re-pinned, a new cookie)
    other = wslb(config, extra=["--secret-file", str(tmp_path / "other")])
    r = await _pin(other, cookie)
    assert "set-cookie" in r.headers


def test_check_warns_that_secret_shows_in_ps() -> None:
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "wslb",
            "check",
            "-c",
            str(ROOT / "examples" / "basic" / "wslb.yaml"),
            "--secret",
            "s3cr3t",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert "--secret: warning: the key shows in ps" in res.stderr
