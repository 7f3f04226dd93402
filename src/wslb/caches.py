"""Bounded memo dictionaries for the data path: a value worked out once per distinct key (a
Host's route table, a client address's verdict, a response field, a verified Engine.IO sid),
with the dictionary emptied all at once when it is full. Emptying costs one recomputation per
live key, and no bookkeeping per hit, which an LRU order would add to every request."""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


def remember(cache: dict[K, V], key: K, value: V, limit: int) -> V:
    """``cache[key] = value``, after emptying ``cache`` if it holds ``limit`` entries."""
    if len(cache) >= limit:
        cache.clear()
    cache[key] = value
    return value
