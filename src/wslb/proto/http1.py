"""HTTP/1.1 (RFC 9112) parsing with ``httptools`` and serialisation, sans I/O.

``RequestParser`` and ``ResponseParser`` take bytes and call a sink: ``*_head`` once the head is
complete, ``*_body`` for each piece of (de-chunked) body, ``*_end`` when the message is complete.
Limits on the request target and head are enforced while the bytes arrive, so a peer cannot make
the parser buffer more than the limit plus one read.

An Upgrade request (or a 101 response) stops the parser at the end of the head:
``feed()`` returns the offset in the fed bytes where the upgraded protocol starts, else ``None``.
Errors come out as :class:`~wslb.errors.HTTPError` subclasses carrying the status to answer.
"""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import Protocol

import httptools

from wslb.errors import (
    BadGateway,
    BadRequest,
    HeaderFieldsTooLarge,
    HTTPError,
    URITooLong,
    VersionNotSupported,
)

Headers = list[tuple[bytes, bytes]]
Lines = list[bytes]  # serialised header fields, b"Name: value\r\n" each
REASON_PHRASES = {int(s): s.phrase.encode() for s in HTTPStatus}

# Hop-by-hop fields (RFC 9110 7.6.1): never forwarded, in either direction.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)

# The parsers classify each field name once, while parsing: most fields cost one dict lookup and
# go straight into the head's ``forward`` list (what a proxy passes on), so that forwarding needs
# no second pass over the headers.
(
    _HOST,
    _CONTENT_LENGTH,
    _TRANSFER_ENCODING,
    _CONNECTION,
    _UPGRADE,
    _EXPECT,
    _HOP,
    _XFF,
    _XFPROTO,
    _XFPORT,
    _PLAIN,  # a field with no special meaning: forwarded as it is (never in _KINDS)
) = range(11)
_KINDS = {name: _HOP for name in HOP_BY_HOP} | {
    b"host": _HOST,
    b"content-length": _CONTENT_LENGTH,
    b"transfer-encoding": _TRANSFER_ENCODING,
    b"connection": _CONNECTION,
    b"upgrade": _UPGRADE,
    b"expect": _EXPECT,
    b"x-forwarded-for": _XFF,
    b"x-forwarded-proto": _XFPROTO,
    b"x-forwarded-port": _XFPORT,
}

# Most senders spell the common field names one of three ways: as written in the RFCs
# ("WWW-Authenticate"), in lowercase, or canonicalised as Go does ("Www-Authenticate"). The
# parsers look a name up as it was sent first, which spares most fields the lowercase copy and
# its hashing; a name spelled any other way takes the lowercase lookup in ``_KINDS``. Both give
# the same kind, as this table is made from ``_KINDS``.
_COMMON_NAMES = (
    # requests
    b"Host", b"User-Agent", b"Accept", b"Accept-Encoding", b"Accept-Language",
    b"Accept-Charset", b"Cookie", b"Referer", b"Origin", b"Authorization", b"Cache-Control",
    b"Pragma", b"Range", b"If-None-Match", b"If-Modified-Since", b"If-Match", b"If-Range",
    b"If-Unmodified-Since", b"DNT", b"Upgrade-Insecure-Requests", b"X-Requested-With",
    b"X-Forwarded-For", b"X-Forwarded-Proto", b"X-Forwarded-Port", b"X-Forwarded-Host",
    b"X-Real-IP", b"X-Request-ID", b"Forwarded", b"Via", b"Expect", b"TE", b"Priority",
    b"Sec-WebSocket-Key", b"Sec-WebSocket-Version", b"Sec-WebSocket-Extensions",
    b"Sec-WebSocket-Protocol", b"Sec-Fetch-Site", b"Sec-Fetch-Mode", b"Sec-Fetch-Dest",
    b"Sec-Fetch-User", b"Sec-CH-UA", b"Sec-CH-UA-Mobile", b"Sec-CH-UA-Platform",
    # both
    b"Content-Type", b"Content-Length", b"Content-Encoding", b"Transfer-Encoding",
    b"Connection", b"Keep-Alive", b"Upgrade", b"Trailer", b"Date",
    # responses
    b"Server", b"Set-Cookie", b"Expires", b"Last-Modified", b"ETag", b"Vary", b"Location",
    b"Age", b"Accept-Ranges", b"Allow", b"Retry-After", b"WWW-Authenticate",
    b"Content-Language", b"Content-Disposition", b"Content-Range", b"Content-Security-Policy",
    b"Access-Control-Allow-Origin", b"Access-Control-Allow-Credentials",
    b"Access-Control-Allow-Methods", b"Access-Control-Allow-Headers",
    b"Access-Control-Expose-Headers", b"Access-Control-Max-Age", b"Strict-Transport-Security",
    b"X-Content-Type-Options", b"X-Frame-Options", b"X-XSS-Protection", b"Referrer-Policy",
    b"Sec-WebSocket-Accept", b"Alt-Svc", b"X-Powered-By",
)  # fmt: skip
_SPELLED = {
    spelling: _KINDS.get(spelling.lower(), _PLAIN)
    for name in _COMMON_NAMES
    for spelling in (
        name,
        name.lower(),
        b"-".join(word[:1].upper() + word[1:].lower() for word in name.split(b"-")),
    )
}


# RFC 9110 7.2 / RFC 3986 3.2.2: uri-host [ ":" port ]; nothing else may name the host that
# routing (and the endpoint) sees. An empty host is refused where the target has no authority
# of its own (RFC 9110 4.2.1: an "http" URI has a host; nginx answers 400 too).
_CRLF_START = (b"\r", b"\n")
_VERSION_LINE = {"1.1": b" HTTP/1.1\r\n", "1.0": b" HTTP/1.0\r\n"}
_LINE_VERSION = {tail: version for version, tail in _VERSION_LINE.items()}
_HOST_SYNTAX = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(?::[0-9]*)?")


class RequestHead:
    """A parsed request head. ``headers`` keeps every field as sent, in order; ``forward`` the
    ones a proxy passes on as they are, already serialised (no hop-by-hop, framing or
    X-Forwarded-* fields, whose values are kept in ``xff``, ``xfproto`` and ``xfport``)."""

    __slots__ = (
        "chunked",
        "connection",
        "content_length",
        "expect_continue",
        "forward",
        "headers",
        "host",
        "keep_alive",
        "method",
        "path",
        "query",
        "target",
        "trailers",
        "upgrade",
        "version",
        "xff",
        "xfport",
        "xfproto",
    )

    def __init__(self) -> None:
        self.headers: Headers = []
        self.forward: Lines = []
        self.method = b"GET"
        self.target = b"/"
        self.path = "/"
        self.query = b""
        self.version = "1.1"
        self.host: str | None = None
        self.content_length: int | None = None
        self.chunked = False
        self.keep_alive = True
        self.upgrade: bytes | None = None  # the Upgrade header's value when the request upgrades
        self.connection = b""  # Connection header value, lowercase
        self.expect_continue = False
        self.xff: bytes | None = None
        self.xfproto: bytes | None = None
        self.xfport: bytes | None = None
        self.trailers: Lines | None = None  # trailer fields of a chunked body, serialised

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)

    def header(self, name: bytes) -> bytes | None:
        """First value of a header (name lowercase)."""
        for n, v in self.headers:
            if n.lower() == name:
                return v
        return None


class ResponseHead:
    """A parsed response head: ``forward`` holds the fields a proxy passes on, serialised, as
    for :class:`RequestHead`; the framing and connection fields are parsed into attributes."""

    __slots__ = (
        "chunked",
        "connection",
        "content_length",
        "forward",
        "keep_alive",
        "reason",
        "status",
        "trailers",
        "upgrade",
    )

    def __init__(self) -> None:
        self.forward: Lines = []
        self.status = 0
        self.reason = b""
        self.content_length: int | None = None
        self.chunked = False
        self.keep_alive = True
        self.connection = b""  # Connection header value, lowercase
        self.upgrade: bytes | None = None
        self.trailers: Lines | None = None


class RequestSink(Protocol):
    def on_request_head(self, head: RequestHead) -> None: ...
    def on_request_body(self, data: bytes) -> None: ...
    def on_request_end(self) -> None: ...


class ResponseSink(Protocol):
    def on_response_head(self, head: ResponseHead) -> None: ...
    def on_response_body(self, data: bytes) -> None: ...
    def on_response_end(self) -> None: ...


def _parse_content_length(value: bytes, error: type[HTTPError]) -> int:
    value = value.strip()
    if not value.isdigit() or len(value) > 18:
        raise error("invalid Content-Length")
    return int(value)


# The largest chunk size taken: nginx's and HAProxy's (a signed 64-bit length). llhttp takes up
# to 2**64 - 1 and would stream such a chunk on as the start of a huge one.
MAX_CHUNK_SIZE = 2**63 - 1
MAX_CHUNK_LINE = 4096  # a chunk-size line (size, extensions) longer than this is refused


class ChunkSizes:
    """The chunk sizes of a chunked request body, read off the raw bytes beside llhttp (which
    validates the framing but does not say the sizes): a size over MAX_CHUNK_SIZE is a 400
    before any of that chunk goes on. ``feed`` takes each read from where the body starts;
    after the last chunk (size 0) it reads nothing more (trailers, a pipelined request)."""

    __slots__ = ("done", "left", "line")

    def __init__(self) -> None:
        self.left = 0  # bytes of chunk data (and its CRLF) still to skip
        self.line = b""  # the chunk-size line being read, so far
        self.done = False

    def feed(self, data: bytes, pos: int = 0) -> None:
        n = len(data)
        while pos < n and not self.done:
            if self.left:
                step = min(self.left, n - pos)
                self.left -= step
                pos += step
                continue
            eol = data.find(b"\n", pos, pos + MAX_CHUNK_LINE + 1)
            line = self.line + data[pos : n if eol < 0 else eol]
            if len(line) > MAX_CHUNK_LINE:
                raise BadRequest(f"chunk-size line over {MAX_CHUNK_LINE} bytes")
            if eol < 0:
                self.line = line
                return
            self.line = b""
            pos = eol + 1
            digits = line.split(b";", 1)[0].strip(b" \t\r").lstrip(b"0")
            if len(digits) > 16 or (len(digits) == 16 and digits[:1] in b"89ABCDEFabcdef"):
                raise BadRequest(f"chunk size over {MAX_CHUNK_SIZE}")
            try:
                size = int(digits or b"0", 16)
            except ValueError:
                return  # not a chunk size: llhttp refuses the framing itself
            if size == 0:
                self.done = True
            else:
                self.left = size + 2  # the data, then its CRLF


class RequestParser:
    """Server side of HTTP/1.1 on one connection."""

    __slots__ = (
        "_body_at",
        "_chunk",
        "_done",
        "_end",
        "_forward",
        "_fresh",
        "_head",
        "_head_chunks",
        "_headers",
        "_line_from",
        "_max_header_size",
        "_max_headers",
        "_max_uri_size",
        "_parser",
        "_raw_bytes",
        "_scan_pos",
        "_sink",
        "_sizes",
        "_url",
        "in_head",
        "on_body",
    )

    def __init__(
        self,
        sink: RequestSink,
        *,
        max_uri_size: int = 8192,
        max_header_size: int = 32768,
        max_headers: int = 100,
    ) -> None:
        self._sink = sink
        # Bodies and ends go straight to the sink: httptools looks these up once, here.
        self.on_body = sink.on_request_body
        self._end = sink.on_request_end
        #: True while a request head has started and is not complete
        self.in_head = False
        self._max_uri_size = max_uri_size
        self._max_header_size = max_header_size
        self._max_headers = max_headers
        self._parser = httptools.HttpRequestParser(self)
        self._head = RequestHead()
        self._headers = self._head.headers
        self._forward = self._head.forward
        self._url = b""
        self._raw_bytes = 0
        self._chunk = b""  # the read being parsed (only during feed)
        #: the reads the current head began in and arrived in, to check its request line
        self._head_chunks: list[bytes] = []
        self._done = True  # the last message is complete: the next one starts a new read...
        self._fresh = True  # ...so the first message beginning in this read begins at its start
        self._line_from = -1  # where to look for a pipelined request's line (-1: first line)
        self._scan_pos = 0  # where in the current read the last request line ended
        self._body_at = 0  # where in the current read the last head ended
        self._sizes: ChunkSizes | None = None  # the chunked body being received, if any

    def release(self) -> None:
        """The connection is over: drop the references that make a cycle with the sink (and
        with httptools' parser), so that reference counting frees it all at once. Once only
        matters; calling it again does nothing."""
        for name in ("_parser", "on_body", "_end", "_sink"):
            if hasattr(self, name):
                delattr(self, name)
        self._head_chunks = []

    def feed(self, data: bytes) -> int | None:
        self._chunk = data
        self._fresh = self._done
        self._scan_pos = 0
        if self.in_head:
            self._head_chunks.append(data)
        elif self._sizes is not None:
            self._sizes.feed(data)  # before llhttp hands any of it on
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            return int(exc.args[0])
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, HTTPError):
                raise exc.__context__ from None
            raise BadRequest(f"parser callback failed: {exc.__context__!r}") from None
        except httptools.HttpParserInvalidMethodError:
            raise BadRequest("invalid method") from None
        except httptools.HttpParserInvalidURLError:
            raise BadRequest("invalid request target") from None
        except httptools.HttpParserError as exc:
            msg = str(exc)
            if msg == "Invalid HTTP version":  # a well-formed version wslb does not speak
                raise VersionNotSupported(msg) from None
            raise BadRequest(msg) from None  # bare LF, malformed version, ...
        if self.in_head:
            # The head is still incomplete: bound what httptools buffers for a header that is
            # arriving in pieces (its callbacks only see whole fields; an overlong target is
            # caught by on_url as it arrives).
            self._raw_bytes += len(data)
            if self._raw_bytes > self._max_uri_size + self._max_header_size + 1024:
                raise HeaderFieldsTooLarge(f"request head over {self._max_header_size} bytes")
        self._chunk = b""  # an idle connection keeps no read alive
        return None

    # ---- httptools callbacks (kept lean: they run for every request and every header)
    def on_message_begin(self) -> None:
        self._head = head = RequestHead()
        self._headers = head.headers
        self._forward = head.forward
        self._url = b""
        self.in_head = True
        self._raw_bytes = 0
        self._head_chunks = [self._chunk]
        self._done = False
        # A message that begins in a fresh read begins at its start; one that follows another
        # in the same read begins somewhere after the last request line found there.
        self._line_from = -1 if self._fresh else self._scan_pos
        self._fresh = False

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self._max_uri_size:
            raise URITooLong(f"request target over {self._max_uri_size} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        kind = _SPELLED.get(name)
        if kind is None:
            kind = _KINDS.get(name.lower(), _PLAIN)
        if kind == _PLAIN:
            self._forward.append(b"".join((name, b": ", value, b"\r\n")))
            return
        head = self._head
        if kind == _HOST:
            if head.host is not None:
                raise BadRequest("duplicate Host header")
            value = value.rstrip(b" \t")  # trailing OWS is not part of a value (RFC 9110 5.5)
            if not _HOST_SYNTAX.fullmatch(value):
                raise BadRequest("invalid Host")
            head.host = value.decode("latin-1")
            self._forward.append(b"".join((name, b": ", value, b"\r\n")))
        elif kind == _CONTENT_LENGTH:
            # Digits alone (what senders send) need no stripping: the number the check gives.
            if value.isdigit() and len(value) <= 18:
                n = int(value)
            else:
                n = _parse_content_length(value, BadRequest)
            if head.content_length is not None and head.content_length != n:
                raise BadRequest("conflicting Content-Length headers")
            head.content_length = n
        elif kind == _TRANSFER_ENCODING:
            head.chunked = True
        elif kind == _CONNECTION:
            head.connection = (
                (head.connection + b"," + value).lower() if head.connection else value.lower()
            )
        elif kind == _UPGRADE:
            head.upgrade = value
        elif kind == _EXPECT:
            head.expect_continue = value.strip().lower() == b"100-continue"
            self._forward.append(b"".join((name, b": ", value, b"\r\n")))
        elif kind == _XFF:
            head.xff = value if head.xff is None else head.xff + b", " + value
        elif kind == _XFPROTO:
            head.xfproto = value
        elif kind == _XFPORT:
            head.xfport = value

    def on_message_complete(self) -> None:
        self._done = True
        self._sizes = None
        self._end()

    def _llhttp_version(self) -> str:
        version = self._parser.get_http_version()
        if version != "1.1" and version != "1.0":
            raise VersionNotSupported(f"HTTP/{version}")
        return version

    def _request_line_version(self) -> str:
        """The request's HTTP version ("1.1" or "1.0"), once its request line is checked.

        llhttp also parses ``RTSP/x.y`` and ``ICE/x.y`` request lines (as that version): a
        request is HTTP only if its request line ends in `` HTTP/x.y``. The line is the first
        of a read when the request begins one (the common case, checked exactly); a request
        pipelined after another in the same read is found after the line before it.

        In the common case the version is read off the end of the line: llhttp takes one digit
        each for major and minor, then CRLF (no leniency is turned on), so a line ending in
        `` HTTP/1.1`` CRLF is one it parsed as 1.1. That spares ``get_http_version()``, a
        ``str.format`` in httptools and the dearest call of a request head. A line that ends
        otherwise is refused as before: for the version llhttp gives, if wslb speaks it."""
        chunks = self._head_chunks
        self._head_chunks = []
        buf = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if self._line_from < 0:
            start = 0
            if buf[:1] in _CRLF_START:  # empty lines before a request (whole or cut)
                start = len(buf) - len(buf.lstrip(b"\r\n"))
            end = buf.find(b"\r\n", start) + 2
            # its last 11 bytes: b" HTTP/1.1\r\n" or b" HTTP/1.0\r\n" for an HTTP line
            version = _LINE_VERSION.get(buf[end - 11 : end]) if end - 11 >= start else None
            if version is None:
                version = self._llhttp_version()
                raise BadRequest(f"not an HTTP/{version} request line (RTSP or ICE?)")
        else:
            version = self._llhttp_version()
            at = buf.find(self._url + _VERSION_LINE[version], self._line_from)
            if at < 0:
                raise BadRequest(f"not an HTTP/{version} request line (RTSP or ICE?)")
            end = at + len(self._url) + 11  # len(_VERSION_LINE[version]) == 11
        # where the next pipelined request line may start, in the read being parsed
        self._scan_pos = max(0, end - (len(buf) - len(chunks[-1])))
        if self._head.chunked:  # where its body starts in that read: after the empty line
            self._body_at = buf.find(b"\r\n\r\n", end - 2) + 4 - (len(buf) - len(chunks[-1]))
        return version

    def on_headers_complete(self) -> None:
        self.in_head = False
        headers = self._headers
        if len(headers) > self._max_headers:
            raise HeaderFieldsTooLarge(f"more than {self._max_headers} header fields")
        # The head arrived within the bytes fed since it began: only when those are more than
        # the limit is it worth adding up the fields.
        if self._raw_bytes + len(self._chunk) > self._max_header_size:
            size = sum(len(n) + len(v) + 4 for n, v in headers)
            if size > self._max_header_size:
                raise HeaderFieldsTooLarge(f"request head over {self._max_header_size} bytes")
        p = self._parser
        head = self._head
        head.method = p.get_method()
        head.version = version = self._request_line_version()
        head.keep_alive = p.should_keep_alive()
        if head.upgrade is not None and not p.should_upgrade():
            head.upgrade = None
        if head.chunked and head.content_length is not None:
            raise BadRequest("both Content-Length and Transfer-Encoding")
        target = self._url
        head.target = target
        if target[:1] == b"/":
            path, _, query = target.partition(b"?")
            head.path = path.decode("latin-1")
            head.query = query
        elif target == b"*":
            head.path = "*"
        else:
            try:
                url = httptools.parse_url(target)
            except httptools.HttpParserInvalidURLError:
                raise BadRequest("invalid request target") from None
            if url.host:
                # RFC 9112 3.2.2: the authority of an absolute-form target replaces Host, for
                # routing and for the endpoint alike (they must agree on the host).
                host = b"[" + url.host + b"]" if b":" in url.host else url.host  # IPv6
                authority = host + (b":%d" % url.port if url.port else b"")
                if not _HOST_SYNTAX.fullmatch(authority):
                    raise BadRequest("invalid authority")
                head.host = authority.decode("latin-1")
                forward = [ln for ln in head.forward if ln[:5].lower() != b"host:"]
                forward.insert(0, b"Host: " + authority + b"\r\n")
                head.forward = forward
            path = url.path or b"/"
            head.path = path.decode("latin-1")
            head.query = url.query or b""
            head.target = path + (b"?" + url.query if url.query else b"")
        if head.host is None and version == "1.1":
            raise BadRequest("HTTP/1.1 request without Host")
        if head.host is not None and head.host[:1] in ("", ":"):
            raise BadRequest("empty Host")
        if version == "1.0" and head.chunked:
            # RFC 9112 6.1: framing an HTTP/1.0 sender cannot have meant; no guessing
            raise BadRequest("Transfer-Encoding in an HTTP/1.0 request")
        if head.chunked:
            # Fields after the body are trailers: they collect apart from the head's fields.
            head.trailers = self._forward = []
            self._headers = []
            self._sizes = sizes = ChunkSizes()
            sizes.feed(self._chunk, self._body_at)  # what follows the head in this read
        self._sink.on_request_head(head)


class ResponseParser:
    """Client side of HTTP/1.1 on one upstream connection."""

    __slots__ = ("_fields", "_head", "_parser", "sink")

    def __init__(self, sink: ResponseSink) -> None:
        self.sink = sink
        self._parser = httptools.HttpResponseParser(self)
        self._head = self._fields = ResponseHead()

    def release(self) -> None:
        """The connection is over: break the cycles with the sink and httptools' parser (once;
        again does nothing)."""
        for name in ("_parser", "sink"):
            if hasattr(self, name):
                delattr(self, name)

    @property
    def head(self) -> ResponseHead:
        """The head of the response being parsed (or the last one)."""
        return self._head

    def feed(self, data: bytes) -> int | None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            return int(exc.args[0])
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, HTTPError):
                raise exc.__context__ from None
            raise BadGateway(f"response callback failed: {exc.__context__!r}") from None
        except httptools.HttpParserError as exc:
            raise BadGateway(f"invalid response from upstream: {exc}") from None
        return None

    def on_message_begin(self) -> None:
        self._head = self._fields = ResponseHead()

    def on_header(self, name: bytes, value: bytes) -> None:
        head = self._fields  # the head, or after a chunked body the trailers' collector
        kind = _SPELLED.get(name)
        if kind is None:
            kind = _KINDS.get(name.lower(), _PLAIN)
        if kind >= _XFF or kind == _HOST or kind == _EXPECT:  # _PLAIN or a request's field
            head.forward.append(b"".join((name, b": ", value, b"\r\n")))
        elif kind == _CONTENT_LENGTH:
            if value.isdigit() and len(value) <= 18:  # as in RequestParser.on_header
                n = int(value)
            else:
                n = _parse_content_length(value, BadGateway)
            if head.content_length is not None and head.content_length != n:
                raise BadGateway("conflicting Content-Length headers from upstream")
            head.content_length = n
        elif kind == _TRANSFER_ENCODING:
            head.chunked = True
        elif kind == _CONNECTION:
            head.connection = (
                (head.connection + b"," + value).lower() if head.connection else value.lower()
            )
        elif kind == _UPGRADE:
            head.upgrade = value

    def on_headers_complete(self) -> None:
        p = self._parser
        head = self._head
        head.status = status = p.get_status_code()
        # The reason phrase carries no meaning (RFC 9112 4): wslb sends the standard one.
        head.reason = REASON_PHRASES.get(status, b"Unknown")
        head.keep_alive = p.should_keep_alive()
        if head.chunked:
            head.content_length = None
            # Fields after the body are trailers: they collect apart from the head's fields.
            collector = ResponseHead()
            head.trailers = collector.forward
            self._fields = collector
        self.sink.on_response_head(head)

    def on_body(self, body: bytes) -> None:
        self.sink.on_response_body(body)

    def on_message_complete(self) -> None:
        self.sink.on_response_end()


# --------------------------------------------------------------------------- serialisation


CRLF = b"\r\n"


def find_field(lines: Lines, lname: bytes) -> bytes | None:
    """The value of the first serialised field named ``lname`` (lowercase)."""
    n = len(lname)
    for line in lines:
        if line[n : n + 1] == b":" and line[:n].lower() == lname:
            return line[n + 1 : -2].strip()
    return None


def field(name: bytes, value: bytes) -> bytes:
    """One serialised header field."""
    return b"".join((name, b": ", value, b"\r\n"))


# Status lines with the standard reason phrases (the ones the parsers hand on), made once.
_STATUS_LINES = {s: (r, b"HTTP/1.1 %d %s\r\n" % (s, r)) for s, r in REASON_PHRASES.items()}


# (A list display: ``(*lines,)`` would build the same list and then copy it into a tuple.)
def request_head_bytes(method: bytes, target: bytes, lines: Lines) -> bytes:
    return b"".join([method, b" ", target, b" HTTP/1.1\r\n", *lines, b"\r\n"])


def response_head_bytes(status: int, reason: bytes, lines: Lines) -> bytes:
    known = _STATUS_LINES.get(status)
    if known is not None and known[0] == reason:
        line = known[1]
    else:
        line = b"HTTP/1.1 %d " % status + reason + b"\r\n"
    return b"".join([line, *lines, b"\r\n"])


def chunk_header(size: int) -> bytes:
    return b"%x\r\n" % size


LAST_CHUNK = b"0\r\n\r\n"
