"""Reading wslb's admin listener /metrics in tests: parsed by prometheus_client's own parser."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support.procs import Wslb, scaled


def admin_url(lb: Wslb) -> str:
    return f"http://127.0.0.1:{lb.info['admin']['port']}"


def samples_of(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text page, parsed by prometheus_client's own parser."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name, tuple(sorted(s.labels.items()))] = s.value
    return out


def total(samples: dict[Any, float], name: str, **labels: str) -> float:
    """The sum of the samples named ``name`` whose labels include ``labels``."""
    return sum(
        v
        for (n, lv), v in samples.items()
        if n == name and all(dict(lv).get(k) == want for k, want in labels.items())
    )


async def metrics_until(
    admin: str, check: Callable[[dict[Any, float]], bool], timeout: float = 15
) -> dict[Any, float]:
    """Poll /metrics until ``check`` holds (workers publish once a second); bounded."""
    deadline = time.monotonic() + scaled(timeout)
    async with httpx.AsyncClient() as http:
        while True:
            samples = samples_of((await http.get(f"{admin}/metrics")).text)
            if check(samples) or time.monotonic() > deadline:
                return samples
            await asyncio.sleep(0.2)
