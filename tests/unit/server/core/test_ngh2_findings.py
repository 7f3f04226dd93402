"""What ngh2 0.3.0 (libnghttp2) does that wslb works around: the minimal reproductions that
docs/http2.md ("ngh2: findings and workarounds") quotes, byte for byte on a server-side
connection. A new ngh2 that behaves otherwise fails here: then the workaround in
``server/core/h2session.py`` and the docs are to be revisited with the pin."""

from __future__ import annotations

import ngh2

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0, 1, 3, 4, 7, 8, 9
END_STREAM, END_HEADERS = 0x1, 0x4
GET = b"\x82\x86\x84\x41\x01a"  # HPACK: :method GET, :scheme http, :path /, :authority a
POST = b"\x83\x86\x84\x41\x01a"


def frame(kind: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes((kind, flags)) + sid.to_bytes(4, "big") + payload


def frames(out: bytes) -> list[tuple[int, int, bytes]]:
    """(type, stream, payload) of each frame in ``out``."""
    seen, i = [], 0
    while i < len(out):
        n = int.from_bytes(out[i : i + 3], "big")
        seen.append((out[i + 3], int.from_bytes(out[i + 5 : i + 9], "big"), out[i + 9 : i + 9 + n]))
        i += 9 + n
    return seen


def server(**config: object) -> ngh2.Connection:
    conn = ngh2.Connection(ngh2.Role.SERVER, ngh2.Configuration(**config))  # type: ignore[arg-type]
    conn.initiate_connection({})
    conn.data_to_send()
    return conn


def test_a_limit_exceeded_leaves_no_goaway_to_send() -> None:
    conn = server(max_continuations=8)
    flood = frame(HEADERS, 0, 1, GET) + b"".join(
        frame(CONTINUATION, 0, 1, b"\x40\x01x\x01y") for _ in range(30)
    )
    try:
        conn.receive_data(PREFACE + frame(SETTINGS, 0, 0) + flood)
    except ngh2.DenialOfServiceError:
        pass
    else:
        raise AssertionError("30 CONTINUATION frames were taken")
    try:
        conn.data_to_send()
    except ngh2.ConnectionStateError:
        pass  # nothing, not even a GOAWAY: wslb logs and closes the TCP connection
    else:
        raise AssertionError("the connection is usable after the flood")


def test_a_malformed_request_is_reset_with_no_event() -> None:
    conn = server()
    bad = GET + b"\x00\x0aconnection\x0akeep-alive"  # a connection-specific field
    conn.receive_data(PREFACE + frame(SETTINGS, 0, 0) + frame(HEADERS, 5, 1, bad))
    assert [type(e) for e in conn.events()] == [ngh2.SettingsReceived]
    sent = frames(conn.data_to_send())
    assert (RST_STREAM, 1, (1).to_bytes(4, "big")) in sent  # PROTOCOL_ERROR


def test_a_reset_submitted_with_the_response_drops_its_headers() -> None:
    conn = server()
    conn.receive_data(PREFACE + frame(SETTINGS, 0, 0) + frame(HEADERS, END_HEADERS, 1, POST))
    conn.events()
    conn.send_response(1, [(b":status", b"413")], end_stream=True)
    conn.reset_stream(1, ngh2.ErrorCode.NO_ERROR)
    kinds = [(t, sid) for t, sid, _ in frames(conn.data_to_send())]
    assert (RST_STREAM, 1) in kinds
    assert (HEADERS, 1) not in kinds  # the 413 never leaves: wslb resets once it has gone


def test_a_closed_stream_keeps_its_unacknowledged_connection_window() -> None:
    def cancelled(acknowledge: bool) -> tuple[int, list[tuple[int, int, bytes]]]:
        conn = server(auto_window_update=False)
        body = b"".join(frame(DATA, 0, 1, b"x" * 16000) for _ in range(3))
        conn.receive_data(
            PREFACE + frame(SETTINGS, 0, 0) + frame(HEADERS, END_HEADERS, 1, POST) + body
        )
        conn.receive_data(frame(RST_STREAM, 0, 1, (8).to_bytes(4, "big")))  # CANCEL
        assert ngh2.StreamClosed in [type(e) for e in conn.events()]
        if acknowledge:
            conn.acknowledge_received_data(48000, 1)
        return conn.local_window_size, frames(conn.data_to_send())

    window, sent = cancelled(acknowledge=False)
    assert window == 65535 - 48000 and all(t != WINDOW_UPDATE for t, _, _ in sent)
    window, sent = cancelled(acknowledge=True)  # what wslb does when a stream closes
    assert window == 65535 and (WINDOW_UPDATE, 0, (48000).to_bytes(4, "big")) in sent
