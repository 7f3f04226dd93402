"""Admission control: exact sliding windows, per client and in total, and Retry-After values
that spread a storm over the coming seconds."""

from __future__ import annotations

from collections import Counter

from wslb.middleware.admission import Admission, SlidingWindow


def test_sliding_window_never_lets_more_than_the_limit_into_any_second() -> None:
    w = SlidingWindow(10)
    admitted = []
    for ms in range(5000):  # one attempt per millisecond
        t = ms / 1000
        if w.take(t) == 0.0:
            admitted.append(t)
    for i, start in enumerate(admitted):
        inside = [x for x in admitted[i:] if x - start < 1.0 - 1e-9]
        assert len(inside) <= 10
    assert 50 <= len(admitted) <= 60  # and the limit is used, not undershot


def test_a_storm_is_spread_over_the_following_seconds() -> None:
    adm = Admission(rate=200, client_rate=None)
    answers = [adm.admit(f"10.0.{i // 250}.{i % 250}", i / 2000) for i in range(2000)]
    assert answers.count(0) == 200
    retry = Counter(a for a in answers if a)
    # 1,800 sent away, about one second's worth (200) per second ahead, none told "now"
    assert min(retry) >= 1 and max(retry) <= 11
    assert max(retry.values()) <= 230


def test_per_client_rate_and_a_refusal_further_on_does_not_use_the_clients_share() -> None:
    adm = Admission(rate=None, client_rate=2)
    assert [adm.admit("a", 0.0), adm.admit("a", 0.1), adm.admit("b", 0.1)] == [0, 0, 0]
    assert adm.admit("a", 0.2) == 1
    assert adm.admit("a", 1.05) == 0  # the first one left the window
    both = Admission(rate=1, client_rate=2)
    assert both.admit("a", 0.0) == 0
    assert both.admit("a", 0.1) >= 1  # refused by the total ...
    assert len(both._clients["a"]._times) == 1  # ... so not counted in a's own window


def test_idle_clients_are_swept() -> None:
    adm = Admission(rate=None, client_rate=3)
    for i in range(100):
        adm.admit(f"c{i}", 0.0)
    adm.sweep(0.5)
    assert len(adm._clients) == 100
    adm.sweep(1.5)
    assert adm._clients == {}
