"""Route matching (Ingress semantics) and balancing policies, with no sockets."""

from __future__ import annotations

from collections import Counter

from wslb.balancer.endpoints import (
    EndpointState,
    available,
    next_change,
    pick_least_connections,
    pick_round_robin,
)
from wslb.config.model import BackendSpec
from wslb.routing.table import RouteEntry, RouteTable, normalise_host
from wslb.server.state.backend import BackendState


def table(*rules: tuple[str | None, str, str, str]) -> RouteTable[str]:
    return RouteTable(RouteEntry(h, p, t, name) for h, p, t, name in rules)


def test_exact_beats_prefix_and_longest_prefix_wins() -> None:
    t = table(
        (None, "/", "prefix", "root"),
        (None, "/foo", "prefix", "foo"),
        (None, "/foo/bar", "prefix", "foobar"),
        (None, "/foo/bar", "exact", "exact"),
    )
    assert t.match("x", "/foo/bar") == "exact"
    assert t.match("x", "/foo/bar/") == "foobar"
    assert t.match("x", "/foo/bar/baz") == "foobar"
    assert t.match("x", "/foo/barbaz") == "foo"
    assert t.match("x", "/foobar") == "root"
    assert t.match("x", "/foo") == "foo"


def test_prefix_is_element_wise_and_trailing_slash_ignored() -> None:
    t = table((None, "/aaa/bb/", "prefix", "p"))
    assert t.match(None, "/aaa/bb") == "p"
    assert t.match(None, "/aaa/bb/c") == "p"
    assert t.match(None, "/aaa/bbb") is None


def test_hosts_exact_then_wildcard_then_any() -> None:
    t = table(
        ("foo.example.com", "/", "prefix", "exact-host"),
        ("*.example.com", "/", "prefix", "wild"),
        (None, "/", "prefix", "any"),
    )
    assert t.match("FOO.example.com:8443", "/") == "exact-host"
    assert t.match("bar.example.com", "/") == "wild"
    assert t.match("a.bar.example.com", "/") == "any"  # wildcard covers one label only
    assert t.match("example.com", "/") == "any"
    assert t.match(None, "/") == "any"


def test_host_match_decides_no_fall_through() -> None:
    t = table(("a.com", "/api", "prefix", "api"), (None, "/", "prefix", "any"))
    assert t.match("a.com", "/other") is None
    assert t.match("b.com", "/other") == "any"


def test_first_rule_wins_on_duplicates() -> None:
    t = table((None, "/x", "exact", "first"), (None, "/x", "exact", "second"))
    assert t.match(None, "/x") == "first"


def test_normalise_host() -> None:
    assert normalise_host("Example.COM.:80") == "example.com"
    assert normalise_host("[::1]:8080") == "[::1]"


def eps(*weights: int) -> list[EndpointState]:
    return [EndpointState(f"10.0.0.{i}", 80, w) for i, w in enumerate(weights)]


def test_smooth_weighted_round_robin_sequence() -> None:
    e = eps(5, 1, 1)
    seq = [pick_round_robin(e) for _ in range(7)]
    names = "".join("abc"[e.index(x)] for x in seq if x is not None)
    assert names == "aabacaa"


def test_round_robin_even_spread_and_skips_unavailable() -> None:
    e = eps(1, 1, 1)
    picks = Counter(pick_round_robin(e) for _ in range(300))
    assert set(picks.values()) == {100}
    e[1].healthy = False
    e[2].ejected_until = 10.0
    assert {pick_round_robin(available(e, 5.0)) for _ in range(10)} == {e[0]}
    assert pick_round_robin(available(e, 5.0), exclude=e[0]) is None
    assert pick_round_robin(available(e, 11.0), exclude=e[0]) is e[2]
    assert next_change(e, 5.0) == 10.0


def test_least_connections_uses_active_over_weight() -> None:
    e = eps(1, 2, 1)
    e[0].active, e[1].active, e[2].active = 2, 3, 1
    assert pick_least_connections(e) is e[2]  # 2/1, 3/2, 1/1
    e[2].active = 2
    assert pick_least_connections(e) is e[1]  # 1.5 is the least
    e[1].active = 5  # 2/1, 5/2, 2/1: the first and the last tie
    ties = Counter(pick_least_connections(e) for _ in range(10))
    assert ties[e[0]] == 5 and ties[e[2]] == 5  # ties are spread, not always the first


def test_active_health_thresholds() -> None:
    ep = eps(1)[0]
    assert ep.record_check(False, 2, 3) is False and ep.healthy
    assert ep.record_check(False, 2, 3) is False and ep.healthy
    assert ep.record_check(True, 2, 3) is False and ep.healthy  # a success resets the count
    for _ in range(2):
        ep.record_check(False, 2, 3)
    assert ep.record_check(False, 2, 3) is True and not ep.healthy
    assert ep.record_check(True, 2, 3) is False and not ep.healthy
    assert ep.record_check(True, 2, 3) is True and ep.healthy


def test_passive_ejection_window() -> None:
    ep = eps(1)[0]
    assert ep.record_failure(0.0, max_fails=2, fail_timeout=10) is False
    assert ep.record_failure(11.0, 2, 10) is False  # the first fell out of the window
    assert ep.record_failure(12.0, 2, 10) is True
    assert not ep.available(15.0) and ep.available(22.0)
    assert ep.record_failure(0.0, max_fails=0, fail_timeout=10) is False  # 0 disables


def test_backend_caches_availability_until_it_changes() -> None:
    b = BackendState(BackendSpec(name="b", endpoints=("10.0.0.1:80", "10.0.0.2:80")))
    one, two = b.endpoints
    assert {b.pick(0.0) for _ in range(4)} == {one, two}
    b.endpoint_failed(one, 1.0, "refused")  # ejected for 10 s: the cache is rebuilt
    assert {b.pick(2.0) for _ in range(4)} == {two}
    assert {b.pick(11.5) for _ in range(4)} == {one, two}  # the ejection ended by itself
    two.healthy = False
    b.health_changed()
    assert {b.pick(12.0) for _ in range(4)} == {one}
    assert b.pick(12.0, exclude=one) is None


def test_new_sessions_go_to_the_fewest_live_sessions_ties_at_random() -> None:
    import random

    from wslb.balancer.endpoints import SESSION_WINDOW, pick_fewest_sessions

    eps = [EndpointState(f"10.0.0.{i}", 80) for i in range(3)]
    rng = random.Random(7)
    # each pick opens a session there: 30 handshakes end 10/10/10, whatever the ties did
    for _ in range(30):
        ep = pick_fewest_sessions(eps, 100.0, rng=rng)
        assert ep is not None
        ep.session_opened(100.0)
    assert [ep.sessions(100.0) for ep in eps] == [10, 10, 10]
    # ties are broken at random, not by position: every endpoint gets first picks
    firsts = Counter(pick_fewest_sessions(eps, 100.0, rng=rng) for _ in range(300))
    assert set(firsts) == set(eps) and min(firsts.values()) > 50
    # an upgrade moves a session from "opening" to a tunnel; old handshakes stop counting
    eps[0].session_upgraded()
    eps[0].tunnels += 1
    assert eps[0].sessions(100.0) == 10
    assert eps[1].sessions(100.0 + SESSION_WINDOW + 1) == 0
    assert pick_fewest_sessions(eps, 100.0 + SESSION_WINDOW + 1, rng=rng) in eps[1:]
    # weights count: twice the weight, twice the sessions before it is the fewest
    heavy, light = EndpointState("a", 1, weight=2), EndpointState("b", 1)
    for _ in range(30):
        ep = pick_fewest_sessions([heavy, light], 0.0, rng=rng)
        assert ep is not None
        ep.session_opened(0.0)
    assert (heavy.sessions(0.0), light.sessions(0.0)) == (20, 10)
    assert pick_fewest_sessions([eps[0]], 0.0, exclude=eps[0]) is None


def test_only_round_robin_backends_balance_sessions_by_count() -> None:
    least = BackendState(
        BackendSpec(name="b", balance="least_connections", endpoints=("a:1", "b:1"))
    )
    a, b = least.endpoints
    a.session_opened(0.0)
    a.session_opened(0.0)
    b.active = 5
    assert least.pick_session(0.0) is a  # least_connections: what its policy says
    rr = BackendState(BackendSpec(name="r", endpoints=("a:1", "b:1")))
    a, b = rr.endpoints
    a.session_opened(0.0)
    assert rr.pick_session(0.0) is b
