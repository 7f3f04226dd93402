"""Running the Node scripts under tests/node that drive headless Chromium (Debian's chromium,
through playwright-core from examples/chat's npm packages); skipped when they are missing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.procs import ROOT, scaled


def run_browser_script(script: str, *args: str, timeout: float = 120) -> dict[str, Any]:
    """Run ``tests/node/SCRIPT ARGS...``; its last stdout line, parsed as JSON."""
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    node = shutil.which("node")
    modules = ROOT / "examples" / "chat" / "node_modules" / "playwright-core"
    if node is None or not Path(chromium).exists() or not modules.exists():
        pytest.skip("chromium, node or playwright-core is missing (.ci/run installs them)")
    res = subprocess.run(
        [node, str(ROOT / "tests" / "node" / script), *args],
        capture_output=True,
        text=True,
        timeout=scaled(timeout),
        env={**os.environ, "CHROMIUM": chromium},
        check=False,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    result: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    return result
