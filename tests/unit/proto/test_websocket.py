"""Frame boundaries on a byte stream, checked against frames encoded by wsproto."""

from __future__ import annotations

import random

from wsproto.frame_protocol import FrameProtocol, Opcode

from wslb.proto.websocket import FrameTracker, close_frame

SIZES = [0, 1, 5, 125, 126, 127, 200, 65535, 65536, 70000]


def _stream(rng: random.Random) -> tuple[bytes, list[int]]:
    server = FrameProtocol(client=False, extensions=[])
    client = FrameProtocol(client=True, extensions=[])  # masked frames too
    out, bounds, pos = [], [], 0
    for i in range(200):
        proto = client if i % 17 == 0 else server
        size = rng.choice(SIZES)
        frames = [proto.send_data(b"x" * size, fin=rng.random() < 0.7)]  # one frame a call
        if rng.random() < 0.1:
            frames.append(proto.ping(b"p"))  # a control frame between fragments
        for frame in frames:
            out.append(frame)
            pos += len(frame)
            bounds.append(pos)
    return b"".join(out), bounds


def _chunks(data: bytes, rng: random.Random) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        k = rng.choice([1, 2, 3, 7, 100, 1000, 70000])
        out.append(data[pos : pos + k])
        pos += k
    return out


def test_split_finds_every_frame_end_however_the_stream_is_cut() -> None:
    rng = random.Random(7)
    for _ in range(20):
        stream, bounds = _stream(rng)
        tracker, found, pos = FrameTracker(), [], 0
        for chunk in _chunks(stream, rng):
            off = 0
            while off < len(chunk):
                k = tracker.split(chunk[off:])
                if k < 0:
                    break
                off += k
                found.append(pos + off)
            pos += len(chunk)
        assert found == bounds


def test_feed_knows_whether_a_read_ended_on_a_frame_end() -> None:
    rng = random.Random(8)
    stream, bounds = _stream(rng)
    ends = set(bounds)
    tracker, pos = FrameTracker(), 0
    for chunk in _chunks(stream, rng):
        tracker.feed(chunk)
        pos += len(chunk)
        assert tracker.at_boundary == (pos in ends)


def test_close_frame_is_what_a_client_reads_as_close() -> None:
    client = FrameProtocol(client=True, extensions=[])
    client.receive_bytes(close_frame(1012, "endpoint draining"))
    (frame,) = list(client.received_frames())
    assert frame.opcode is Opcode.CLOSE
    assert frame.payload == (1012, "endpoint draining")
