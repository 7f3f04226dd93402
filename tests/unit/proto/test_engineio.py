"""Engine.IO open-packet tagging for v3 (text and binary payloads) and v4, and sid tags."""

from __future__ import annotations

import json

import pytest

from wslb.balancer.endpoints import EndpointState
from wslb.middleware import engineio as engineio_middleware
from wslb.middleware.engineio import EngineIOAffinity
from wslb.proto.engineio import (
    NotAnOpenPacket,
    query_params,
    replace_sid,
    rewrite_open_packet,
)

OPEN = b'0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":5000}'


def tag(sid: str) -> str:
    return "TAG." + sid


def test_v4_alone_and_followed_by_packets() -> None:
    new, used = rewrite_open_packet(OPEN, b"4", tag, complete=True)  # type: ignore[misc]
    assert used == len(OPEN) and json.loads(new[1:])["sid"] == "TAG.lv_VI97HAXpY6yYWAAAC"
    body = OPEN + b"\x1e40"
    new, used = rewrite_open_packet(body, b"4", tag, complete=True)  # type: ignore[misc]
    assert body[used:] == b"\x1e40"


def test_v4_waits_for_the_whole_open_packet() -> None:
    assert rewrite_open_packet(OPEN[:20], b"4", tag, complete=False) is None
    with pytest.raises(NotAnOpenPacket):
        rewrite_open_packet(OPEN[:20], b"4", tag, complete=True)


def test_v3_text_payload() -> None:
    body = b"%d:%s2:40" % (len(OPEN), OPEN)
    new, used = rewrite_open_packet(body, b"3", tag, complete=True)  # type: ignore[misc]
    length, _, packet = new.partition(b":")
    assert int(length) == len(packet) and json.loads(packet[1:])["sid"].startswith("TAG.")
    assert body[used:] == b"2:40"
    assert rewrite_open_packet(body[:5], b"3", tag, complete=False) is None


def test_v3_binary_payload() -> None:
    digits = bytes(int(c) for c in str(len(OPEN)))
    body = b"\x00" + digits + b"\xff" + OPEN + b"\x00\x02\xff40"
    new, used = rewrite_open_packet(body, b"3", tag, complete=True)  # type: ignore[misc]
    end = new.index(b"\xff")
    n = int("".join(str(d) for d in new[1:end]))
    assert n == len(new) - end - 1 and b"TAG." in new
    assert body[used:] == b"\x00\x02\xff40"


@pytest.mark.parametrize("body", [b"4hello", b'0{"nosid":1}', b"0not json", b"x:0{}"])
def test_not_an_open_packet(body: bytes) -> None:
    with pytest.raises(NotAnOpenPacket):
        rewrite_open_packet(body, b"3" if b":" in body else b"4", tag, complete=True)


def test_query_and_target() -> None:
    q = b"EIO=4&transport=polling&t=Nx1&sid=AB.cd"
    assert query_params(q) == {b"EIO": b"4", b"transport": b"polling", b"sid": b"AB.cd"}
    assert (
        replace_sid(b"/socket.io/?" + q, b"AB.cd", b"cd")
        == b"/socket.io/?EIO=4&transport=polling&t=Nx1&sid=cd"
    )


def test_sid_tags() -> None:
    eps = [EndpointState(f"10.0.0.{i}", 80) for i in range(3)]
    a, b = EngineIOAffinity(b"k", "chat"), EngineIOAffinity(b"k", "chat")
    wire = a.wire_sid(eps[1], "abc").encode()
    assert b.resolve(wire, eps) == (eps[1], b"abc")  # any worker or replica
    assert b.resolve(wire, [eps[0], eps[2]]) == (None, b"abc")  # its endpoint is gone
    other = a.wire_sid(eps[1], "xyz").split(".")[0]
    assert a.resolve(f"{other}.abc".encode(), eps) == (None, b"abc")  # a tag is bound to its sid
    assert EngineIOAffinity(b"other", "chat").resolve(wire, eps) == (None, b"abc")
    assert a.resolve(b"plain-sid", eps) is None  # untagged: not ours
    assert a.resolve(b"short.sid", eps) is None


def test_verified_sids_are_remembered_by_address_and_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    eps = [EndpointState(f"10.0.0.{i}", 80) for i in range(3)]
    a = EngineIOAffinity(b"k", "chat")
    wire = a.wire_sid(eps[2], "abc").encode()
    assert a.resolve(wire, eps) == (eps[2], b"abc")
    assert wire in a._known
    # remembered by address: the endpoint's state after a reload is another object
    again = [EndpointState(f"10.0.0.{i}", 80) for i in range(3)]
    assert a.resolve(wire, again)[0] is again[2]
    assert a.resolve(wire, again[:2]) == (None, b"abc")  # gone: unknown session
    assert a.resolve(wire, again) == (again[2], b"abc")  # back
    forged = b"A" * 12 + b".abc"
    assert a.resolve(forged, eps) == (None, b"abc") and forged not in a._known
    monkeypatch.setattr(engineio_middleware, "KNOWN_MAX", 3)
    wires = [a.wire_sid(eps[0], f"s{i}").encode() for i in range(5)]
    for w in wires:
        assert a.resolve(w, eps)[0] is eps[0]
        assert len(a._known) <= 3
    assert all(a.resolve(w, eps) == (eps[0], w[13:]) for w in wires)
