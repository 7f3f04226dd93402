"""What the exchange and its downstreams agree on: the exchange's states (one field, in the
order an exchange goes through them), the reasons a downstream stops reading its client, and
the addresses of a client connection."""

from __future__ import annotations

import asyncio

from wslb.proto.proxy_protocol import ProxyInfo
from wslb.server.state.listener import ListenerState

IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})
PENDING_BODY_LIMIT = 256 * 1024  # body bytes held while an exchange waits for its upstream

# reasons a downstream stopped reading from its client (a bit mask)
P_UPSTREAM = 1  # the upstream write buffer is full
P_QUEUE = 2  # too many pipelined requests or too much body held
P_UPGRADE = 4  # waiting for the upgrade answer
P_DONE = 8  # the connection is closing or the parser stopped

# The exchange's states, in the order it goes through them (the one field that says where
# it is; comparisons such as ``state >= S_RESPONDING`` read "a response has started"):
S_QUEUED = 0  # behind another request on its connection
S_ROUTING = 1  # first in line: its steps run, an endpoint is picked
S_CONNECTING = 2  # waiting for a connection to the endpoint
S_SENT = 3  # the head (and what there is of the body) went upstream; no response yet
S_RESPONDING = 4  # a response head went to the client (from the endpoint, or a local answer)
S_TUNNEL = 5  # upgraded: the tunnel owns both connections and the holds
S_DONE = 6  # ended; nothing more happens
Address = tuple[str, int]


def addresses(
    transport: asyncio.BaseTransport, listener: ListenerState, proxy: ProxyInfo | None
) -> tuple[Address, Address, bool]:
    """A client connection's (client, local) addresses and whether its peer is a trusted
    proxy: the socket's, or what a PROXY header said (the peer is then the proxy)."""
    peer = transport.get_extra_info("peername")
    local = transport.get_extra_info("sockname")
    client: Address = (peer[0], peer[1]) if peer else ("0.0.0.0", 0)
    here: Address = (local[0], local[1]) if local else ("0.0.0.0", 0)
    trusted = listener.is_trusted(client[0])
    if proxy is not None and proxy.source is not None:
        client = proxy.source
        if proxy.destination is not None:
            here = proxy.destination
    return client, here, trusted
