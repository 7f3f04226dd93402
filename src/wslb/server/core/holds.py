"""Holds: the resources a request or a tunnel has taken, each with the call that gives it back
(an endpoint's active count, a connection-limit slot, a place under a tunnel cap, the client
connection's place under the listener's limits).

Whoever takes a resource registers its release; every ending of the owner (a response
finished, an abort, the client gone, a local answer) calls :meth:`Holds.release_all` once; an
upgrade moves the holds of the request to its tunnel, which releases them when it closes. No
release is placed by hand at the endings, so a new ending cannot forget one.
"""

from __future__ import annotations

from collections.abc import Callable


class Holds(list[Callable[[], None]]):
    """The releases of what is held, in the order taken."""

    __slots__ = ()

    def release_all(self) -> None:
        """Give everything back, once, the last taken first (the list is empty after)."""
        while self:
            self.pop()()

    def give_back(self, release: Callable[[], None]) -> None:
        """Give back one thing before the end (a retry leaves its first endpoint)."""
        try:
            self.remove(release)
        except ValueError:
            return
        release()

    def move_to(self, other: Holds) -> None:
        """``other`` (the tunnel a request became) holds all of it now."""
        other += self
        self.clear()
