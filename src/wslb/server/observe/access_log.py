"""Access logs: one line per request when it ends, one per tunnel when it closes.

They go to the ``wslb.access`` logger at INFO. The text of a line reads like nginx's combined
format; the same values travel as ``record.access`` (a dict), which ``--log-format json`` writes
as the fields of a JSON object. ``server.access_log: false`` turns them off (nothing is
formatted then).

  [c12] 10.0.0.7 "GET /api/items?id=42 HTTP/1.1" 200 512 3.1ms web 10.0.1.4:8080
  [c13] 10.0.0.7 "GET /ws HTTP/1.1" websocket tunnel to 10.0.1.5:8080 closed after 61.2s:
      client closed; 1834 bytes from client, 90211 from upstream
"""

from __future__ import annotations

import logging
import time

from wslb.server.observe.records import RequestRecord, TunnelRecord

log = logging.getLogger("wslb.access")


def request(ex: RequestRecord, outcome: str = "") -> None:
    """``ex`` ended: with a response (``outcome`` empty) or not (aborted, client gone)."""
    head = ex.head
    down = ex.down
    route = ex.route
    fields = {
        "type": "request",
        "cid": down.cid,
        "client": down.client_addr[0],
        "method": head.method.decode("latin-1"),
        "target": head.target[:2000].decode("latin-1"),
        "version": head.version,
        "host": head.host,
        "status": ex.status,
        "bytes_in": ex.body_received,
        "bytes_out": ex.resp_bytes,
        "duration_ms": round((time.monotonic() - ex.born) * 1000, 3),
        "backend": route.backend.name if route is not None else None,
        "endpoint": ex.endpoint.address if ex.endpoint is not None else None,
    }
    if outcome:
        fields["outcome"] = outcome
    log.info(
        '[%s] %s "%s %s HTTP/%s" %d %d %.1fms %s %s%s',
        fields["cid"],
        fields["client"],
        fields["method"],
        fields["target"],
        fields["version"],
        ex.status,
        ex.resp_bytes,
        fields["duration_ms"],
        fields["backend"] or "-",
        fields["endpoint"] or "-",
        f" ({outcome})" if outcome else "",
        extra={"access": fields},
    )


def tunnel(t: TunnelRecord, from_client: int, from_upstream: int) -> None:
    duration = time.monotonic() - t.started
    fields = {
        "type": "tunnel",
        "cid": t.cid,
        "kind": t.kind,
        "client": t.client,
        "request": t.request,
        "endpoint": t.endpoint.address,
        "reason": t.reason,
        "bytes_from_client": from_client,
        "bytes_from_upstream": from_upstream,
        "duration_s": round(duration, 3),
    }
    log.info(
        '[%s] %s "%s" %s tunnel to %s closed after %.1fs: %s; %d bytes from client, %d from '
        "upstream",
        t.cid,
        t.client or "-",
        t.request or "-",
        t.kind,
        t.endpoint.address,
        duration,
        t.reason,
        from_client,
        from_upstream,
        extra={"access": fields},
    )
