"""PROXY protocol v1 (text) and v2 (binary), sans I/O.

Spec: https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt

``build_v1``/``build_v2`` make the header wslb sends to a backend; ``parse`` reads one from a
trusted load balancer in front. ``header_length`` tells how many leading bytes are certainly
header, so a reader can consume exactly the header and leave the rest (a TLS ClientHello, say)
on the socket.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_MAX = 107
V2_MAX = 16 + 65535


class ProxyProtocolError(ValueError):
    pass


@dataclass(frozen=True)
class ProxyInfo:
    """Addresses carried by a PROXY header; ``None`` fields for LOCAL / UNKNOWN."""

    source: tuple[str, int] | None
    destination: tuple[str, int] | None


def _same_family(
    src: str, dst: str
) -> tuple[
    ipaddress.IPv4Address | ipaddress.IPv6Address, ipaddress.IPv4Address | ipaddress.IPv6Address
]:
    """Both addresses in one family: IPv4 ones are mapped to IPv6 when the other is IPv6."""
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if s.version != d.version:
        s = ipaddress.IPv6Address(f"::ffff:{s}") if s.version == 4 else s
        d = ipaddress.IPv6Address(f"::ffff:{d}") if d.version == 4 else d
    return s, d


def build_v1(src: tuple[str, int], dst: tuple[str, int]) -> bytes:
    s, d = _same_family(src[0], dst[0])
    fam = "TCP4" if s.version == 4 else "TCP6"
    return f"PROXY {fam} {s} {d} {src[1]} {dst[1]}\r\n".encode("ascii")


def build_v2(src: tuple[str, int], dst: tuple[str, int]) -> bytes:
    s, d = _same_family(src[0], dst[0])
    body = s.packed + d.packed + struct.pack("!HH", src[1], dst[1])
    fam = 0x11 if s.version == 4 else 0x21
    return V2_SIGNATURE + bytes((0x21, fam)) + struct.pack("!H", len(body)) + body


def header_for(
    version: str | None, client: tuple[str, int], local: tuple[str, int]
) -> bytes | None:
    """The PROXY header a backend asks for (``proxy_protocol: v1 | v2``), or None."""
    if version == "v1":
        return build_v1(client, local)
    if version == "v2":
        return build_v2(client, local)
    return None


def header_length(buf: bytes) -> int | None:
    """Total header length once it can be known from ``buf``, else None (read more).

    Raises ProxyProtocolError as soon as ``buf`` cannot start a PROXY header."""
    if buf[:1] == b"\r":
        n = min(len(buf), 12)
        if buf[:n] != V2_SIGNATURE[:n]:
            raise ProxyProtocolError("not a PROXY protocol header")
        if len(buf) < 16:
            return None
        return 16 + int.from_bytes(buf[14:16], "big")
    n = min(len(buf), 6)
    if buf[:n] != b"PROXY "[:n]:
        raise ProxyProtocolError("not a PROXY protocol header")
    end = buf.find(b"\r\n", 0, V1_MAX + 1)
    if end < 0:
        if len(buf) >= V1_MAX:
            raise ProxyProtocolError("PROXY v1 line too long")
        return None
    return end + 2


def parse(buf: bytes) -> ProxyInfo:
    """Parse one complete header (exactly ``header_length(buf)`` bytes)."""
    if buf.startswith(V2_SIGNATURE):
        return _parse_v2(buf)
    return _parse_v1(buf)


def _port(s: bytes) -> int:
    if not s.isdigit() or len(s) > 5 or (len(s) > 1 and s[:1] == b"0"):
        raise ProxyProtocolError("bad port in PROXY header")
    port = int(s)
    if port > 65535:
        raise ProxyProtocolError("bad port in PROXY header")
    return port


def _parse_v1(buf: bytes) -> ProxyInfo:
    if not buf.endswith(b"\r\n") or len(buf) > V1_MAX:
        raise ProxyProtocolError("PROXY v1 header must end with CRLF within 107 bytes")
    parts = buf[:-2].split(b" ")
    if parts[0] != b"PROXY" or len(parts) < 2:
        raise ProxyProtocolError("not a PROXY v1 header")
    if parts[1] == b"UNKNOWN":
        return ProxyInfo(None, None)
    if len(parts) != 6 or parts[1] not in (b"TCP4", b"TCP6"):
        raise ProxyProtocolError("PROXY v1 needs: PROXY TCP4|TCP6 src dst sport dport")
    want = 4 if parts[1] == b"TCP4" else 6
    try:
        src = ipaddress.ip_address(parts[2].decode("ascii"))
        dst = ipaddress.ip_address(parts[3].decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        raise ProxyProtocolError("bad address in PROXY v1 header") from None
    if src.version != want or dst.version != want:
        raise ProxyProtocolError("PROXY v1 address family mismatch")
    return ProxyInfo((str(src), _port(parts[4])), (str(dst), _port(parts[5])))


def _parse_v2(buf: bytes) -> ProxyInfo:
    if len(buf) < 16:
        raise ProxyProtocolError("short PROXY v2 header")
    ver_cmd, fam = buf[12], buf[13]
    length = struct.unpack("!H", buf[14:16])[0]
    if len(buf) != 16 + length:
        raise ProxyProtocolError("PROXY v2 length mismatch")
    if ver_cmd >> 4 != 2:
        raise ProxyProtocolError("PROXY v2 with a version other than 2")
    cmd = ver_cmd & 0x0F
    if cmd == 0x0:  # LOCAL: health check from the proxy itself
        return ProxyInfo(None, None)
    if cmd != 0x1:
        raise ProxyProtocolError("PROXY v2 unknown command")
    body = buf[16:]
    if fam == 0x11:
        if length < 12:
            raise ProxyProtocolError("PROXY v2 TCP4 block too short")
        src4, dst4 = ipaddress.IPv4Address(body[0:4]), ipaddress.IPv4Address(body[4:8])
        sport, dport = struct.unpack("!HH", body[8:12])
        return ProxyInfo((str(src4), sport), (str(dst4), dport))
    if fam == 0x21:
        if length < 36:
            raise ProxyProtocolError("PROXY v2 TCP6 block too short")
        src6, dst6 = ipaddress.IPv6Address(body[0:16]), ipaddress.IPv6Address(body[16:32])
        sport, dport = struct.unpack("!HH", body[32:36])
        return ProxyInfo((str(src6), sport), (str(dst6), dport))
    if fam == 0x00:
        return ProxyInfo(None, None)
    raise ProxyProtocolError(f"PROXY v2 family {fam:#x} not supported")
