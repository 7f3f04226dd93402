"""Engine.IO session affinity with no cookie and no shared state.

The sid of a handshake's open packet becomes ``<tag>.<sid>``, where ``tag`` is a keyed HMAC of
the endpoint's address and the sid. Later requests of the session carry that value; wslb finds
the endpoint whose HMAC matches among the available ones, routes there and gives the endpoint its
own sid back. Every worker and replica with the same secret agrees; a client cannot make a tag
that selects an endpoint (it would need the secret) nor reuse one for another sid. A tag that
matches no available endpoint (forged, or its pod is gone) is answered as Engine.IO answers an
unknown session, 400, so the client starts a new session at once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence

from wslb.balancer.endpoints import EndpointState
from wslb.caches import remember
from wslb.proto.engineio import NotAnOpenPacket, rewrite_open_packet

TAG_LEN = 12  # characters of base64url: 72 bits
KNOWN_MAX = 10_000  # verified sids remembered (then forgotten all at once and learnt again)


class EngineIOAffinity:
    """Tags and resolves sids. A sid once verified is remembered with its endpoint's address,
    so that the polls of a session cost a dictionary lookup, not an HMAC per endpoint."""

    def __init__(self, secret: bytes, scope: str) -> None:
        self._key = hmac.new(secret, b"engineio:" + scope.encode(), hashlib.sha256).digest()
        self._known: dict[bytes, str] = {}  # a verified wire sid: its endpoint's address

    def tag(self, ep: EndpointState, sid: str) -> str:
        mac = hmac.digest(self._key, ep.address.encode() + b"|" + sid.encode(), "sha256")
        return base64.urlsafe_b64encode(mac[:9]).decode()[:TAG_LEN]

    def wire_sid(self, ep: EndpointState, sid: str) -> str:
        return f"{self.tag(ep, sid)}.{sid}"

    def resolve(
        self, wire: bytes, endpoints: Sequence[EndpointState]
    ) -> tuple[EndpointState | None, bytes] | None:
        """(endpoint or None, the endpoint's own sid) for a tagged sid; None when untagged."""
        address = self._known.get(wire)
        if address is not None:
            for ep in endpoints:
                if ep.address == address:
                    return ep, wire[TAG_LEN + 1 :]
            return None, wire[TAG_LEN + 1 :]  # its endpoint is not available
        tag, dot, sid = wire.partition(b".")
        if not dot or len(tag) != TAG_LEN or not sid:
            return None
        try:
            tag_s, sid_s = tag.decode("ascii"), sid.decode("ascii")
        except UnicodeDecodeError:
            return None, sid
        for ep in endpoints:
            if hmac.compare_digest(self.tag(ep, sid_s), tag_s):
                remember(self._known, wire, ep.address, KNOWN_MAX)
                return ep, sid
        return None, sid


class OpenPacketTagger:
    """The body of a polling handshake's response, with the sid of its open packet tagged for
    ``endpoint``. Pure: bytes in, bytes out. ``feed`` returns None while the open packet is
    incomplete (the response head waits, since a Content-Length changes by ``delta``), then
    what to send; ``finish`` (the body ended) returns what is left. A body that is not an open
    packet passes as it is (``error`` says why)."""

    __slots__ = ("_buf", "_tag", "delta", "error", "version")

    def __init__(self, affinity: EngineIOAffinity, endpoint: EndpointState, version: bytes):
        self._tag = lambda sid: affinity.wire_sid(endpoint, sid)
        self.version = version
        self._buf = b""
        self.delta = 0  # what the rewrite adds to the body's length
        self.error: str | None = None

    def feed(self, data: bytes) -> bytes | None:
        self._buf += data
        return self._rewrite(complete=False)

    def finish(self) -> bytes:
        body = self._rewrite(complete=True)
        assert body is not None
        return body

    def _rewrite(self, *, complete: bool) -> bytes | None:
        buf = self._buf
        try:
            result = rewrite_open_packet(buf, self.version, self._tag, complete)
        except NotAnOpenPacket as exc:
            self.error = str(exc)
            result = (b"", 0)
        if result is None:
            return None
        replacement, consumed = result
        self._buf = b""
        self.delta = len(replacement) - consumed
        return replacement + buf[consumed:]
