"""Endpoint state and the balancing policies, pure: the clock is passed in, nothing does I/O.

``EndpointState`` is one worker's view of one address: active-check health (with consecutive
success / failure thresholds), passive ejection after failed connects (nginx's max_fails /
fail_timeout), and the count of in-flight requests plus open tunnels that ``least_connections``
balances on.

Policies:

* ``round_robin``: nginx's smooth weighted round robin. Each pick adds every candidate's weight to
  its running score, takes the highest, and subtracts the total from the winner: weights 5,1,1
  give a a b a c a a, never a burst.
* ``least_connections``: fewest ``active / weight``; ties go to smooth round robin among them.
* new sessions (an Engine.IO handshake, a WebSocket upgrade that no session pins) on a
  ``round_robin`` backend: :func:`pick_fewest_sessions`, fewest live sessions per weight (open
  tunnels, plus handshakes of the last ``SESSION_WINDOW`` seconds not yet upgraded), ties broken
  at random. A page load is a fixed number of requests, so round robin would send every
  session of a page to the same pod; and random ties, not the first in line, keep workers (each
  counts its own sessions) from herding onto one endpoint.

Policies pick among *available* endpoints; callers cache that list (``available``) and rebuild it
when a health state changes or when ``next_change`` says an ejection has ended.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Sequence

_RNG = random.Random()
SESSION_WINDOW = 30.0  # seconds a handshake counts as a live session before it is upgraded


class EndpointState:
    __slots__ = (
        "_checks_failed",
        "_checks_ok",
        "_fail_times",
        "_score",
        "active",
        "address",
        "draining",
        "ejected_until",
        "ewma",
        "ewma_at",
        "healthy",
        "host",
        "opening",
        "port",
        "terminating",
        "tunnels",
        "weight",
    )

    def __init__(self, host: str, port: int, weight: int = 1) -> None:
        self.host = host
        self.port = port
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.tunnels = 0  # open tunnels (also counted in ``active``)
        self.weight = weight
        self.healthy = True
        self.ejected_until = 0.0
        self.active = 0
        self.draining = False  # by a reload that removed it, or the admin API
        self.terminating = False  # by its source: an EndpointSlice says serving, terminating
        self._score = 0
        self._checks_ok = 0
        self._checks_failed = 0
        self._fail_times: list[float] = []
        self.ewma = 0.0  # peak-EWMA of response-head latency, seconds (0: no sample yet)
        self.ewma_at = 0.0
        self.opening: deque[float] = deque()  # when sessions not yet upgraded began here

    def __repr__(self) -> str:
        return f"<Endpoint {self.address} healthy={self.healthy} active={self.active}>"

    def enter(self) -> None:
        """A request or tunnel starts using this endpoint (``leave`` when it ends)."""
        self.active += 1

    def leave(self) -> None:
        self.active -= 1

    def sessions(self, now: float) -> int:
        """Live sessions here: open tunnels, and handshakes not yet upgraded (recent ones)."""
        opening = self.opening
        while opening and now - opening[0] > SESSION_WINDOW:
            opening.popleft()
        return self.tunnels + len(opening)

    def session_opened(self, now: float) -> None:
        """An Engine.IO handshake went here: a session, until it is upgraded (or old)."""
        self.opening.append(now)

    def session_upgraded(self) -> None:
        """A session that began here became a tunnel (counted as one from now on)."""
        if self.opening:
            self.opening.popleft()

    def available(self, now: float) -> bool:
        return (
            self.healthy
            and not self.draining
            and not self.terminating
            and self.ejected_until <= now
        )

    # ---- active health checks
    def record_check(self, ok: bool, healthy_threshold: int, unhealthy_threshold: int) -> bool:
        """Feed one active check result; returns True when the health state changed."""
        if ok:
            self._checks_failed = 0
            self._checks_ok += 1
            if not self.healthy and self._checks_ok >= healthy_threshold:
                self.healthy = True
                self.ejected_until = 0.0
                return True
        else:
            self._checks_ok = 0
            self._checks_failed += 1
            if self.healthy and self._checks_failed >= unhealthy_threshold:
                self.healthy = False
                return True
        return False

    # ---- passive ejection
    def record_failure(self, now: float, max_fails: int, fail_timeout: float) -> bool:
        """A connect failed; returns True when this ejects the endpoint."""
        if max_fails <= 0:
            return False
        times = [t for t in self._fail_times if now - t < fail_timeout]
        times.append(now)
        self._fail_times = times
        if len(times) >= max_fails:
            self._fail_times = []
            self.ejected_until = now + fail_timeout
            return True
        return False

    def observe_latency(self, rtt: float, now: float, tau: float = 10.0) -> None:
        """Peak-EWMA: a slower sample takes over at once, faster ones decay in over ``tau``."""
        if self.ewma == 0.0 or rtt > self.ewma:
            self.ewma = rtt
        else:
            w = math.exp(-(now - self.ewma_at) / tau)
            self.ewma = self.ewma * w + rtt * (1.0 - w)
        self.ewma_at = now

    def record_success(self) -> None:
        if self._fail_times:
            self._fail_times = []


def available(endpoints: Sequence[EndpointState], now: float) -> list[EndpointState]:
    return [ep for ep in endpoints if ep.available(now)]


def next_change(endpoints: Sequence[EndpointState], now: float) -> float:
    """When the availability of ``endpoints`` next changes by itself (an ejection ends)."""
    return min((ep.ejected_until for ep in endpoints if ep.ejected_until > now), default=math.inf)


def _smooth_pick(candidates: Sequence[EndpointState]) -> EndpointState:
    total = 0
    best: EndpointState | None = None
    for ep in candidates:
        ep._score += ep.weight
        total += ep.weight
        if best is None or ep._score > best._score:
            best = ep
    assert best is not None
    best._score -= total
    return best


def pick_round_robin(
    candidates: Sequence[EndpointState], exclude: EndpointState | None = None
) -> EndpointState | None:
    """Smooth weighted round robin over available ``candidates``."""
    if exclude is not None:
        candidates = [ep for ep in candidates if ep is not exclude]
    if not candidates:
        return None
    if len(candidates) == 1:
        return candidates[0]
    return _smooth_pick(candidates)


def pick_least_connections(
    candidates: Sequence[EndpointState], exclude: EndpointState | None = None
) -> EndpointState | None:
    """Fewest active per weight among available ``candidates``; ties by round robin."""
    best: list[EndpointState] = []
    for ep in candidates:
        if ep is exclude:
            continue
        if not best:
            best = [ep]
            continue
        # compare active/weight without floats: a/w < b/v  <=>  a*v < b*w
        lhs, rhs = ep.active * best[0].weight, best[0].active * ep.weight
        if lhs < rhs:
            best = [ep]
        elif lhs == rhs:
            best.append(ep)
    if not best:
        return None
    if len(best) == 1:
        return best[0]
    return _smooth_pick(best)


def pick_ewma(
    candidates: Sequence[EndpointState],
    exclude: EndpointState | None = None,
    rng: random.Random = _RNG,
) -> EndpointState | None:
    """ingress-nginx's ``ewma``: the better of two random endpoints, scored by peak-EWMA
    latency times (active + 1); endpoints without a sample yet score as the best known."""
    if exclude is not None:
        candidates = [ep for ep in candidates if ep is not exclude]
    n = len(candidates)
    if n <= 1:
        return candidates[0] if n else None
    a, b = rng.sample(candidates, 2) if n > 2 else candidates
    floor = min((ep.ewma for ep in (a, b) if ep.ewma > 0.0), default=1.0)

    def score(ep: EndpointState) -> float:
        return (ep.ewma or floor) * (ep.active + 1)

    return a if score(a) <= score(b) else b


def pick_fewest_sessions(
    candidates: Sequence[EndpointState],
    now: float,
    exclude: EndpointState | None = None,
    rng: random.Random = _RNG,
) -> EndpointState | None:
    """Fewest live sessions per weight among available ``candidates``; ties at random."""
    best: list[EndpointState] = []
    best_n = 0
    for ep in candidates:
        if ep is exclude:
            continue
        n = ep.sessions(now)
        if not best:
            best, best_n = [ep], n
            continue
        # n/w < best_n/v  <=>  n*v < best_n*w
        lhs, rhs = n * best[0].weight, best_n * ep.weight
        if lhs < rhs:
            best, best_n = [ep], n
        elif lhs == rhs:
            best.append(ep)
    if not best:
        return None
    return best[0] if len(best) == 1 else rng.choice(best)


POLICIES = {
    "round_robin": pick_round_robin,
    "least_connections": pick_least_connections,
    "ewma": pick_ewma,
}
