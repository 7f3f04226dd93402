"""One exception tree for wslb.

::

    WslbError
    ├── ConfigError            a configuration that cannot be served; carries every issue at once
    └── HTTPError              an error with a wire status, turned into a local reply
        ├── BadRequest             400  malformed request, framing we refuse
        ├── Forbidden              403  source address denied
        ├── NotFound               404  no route for host and path
        ├── MethodNotAllowed       405  CONNECT and friends (wslb is not a forward proxy)
        ├── RequestTimeout         408  request head or body not received in time
        ├── PayloadTooLarge        413  body over the configured limit
        ├── URITooLong             414  request target over the limit
        ├── HeaderFieldsTooLarge   431  request head over the limit
        ├── BadGateway             502  upstream refused, reset or spoke garbage
        ├── ServiceUnavailable     503  no healthy endpoint (carries Retry-After)
        ├── GatewayTimeout         504  upstream did not answer in time
        └── VersionNotSupported    505  HTTP version other than 1.0 / 1.1

Every :class:`HTTPError` knows its status and a short reason that is safe to show a
client; the detail (``str(exc)``) is for the log only.
"""

from __future__ import annotations

from dataclasses import dataclass


class WslbError(Exception):
    """Base class of every error wslb raises on purpose."""


@dataclass(frozen=True)
class ConfigIssue:
    """One problem found in a configuration source."""

    source: str
    line: int | None
    key: str
    message: str
    severity: str = "error"  # "error" | "warning"

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source}:{self.line}"
        key = f" {self.key}:" if self.key else ""
        return f"{where}:{key} {self.severity}: {self.message}"


class ConfigError(WslbError):
    """A configuration was refused; ``issues`` lists every problem found."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


class HTTPError(WslbError):
    status = 500
    reason = "Internal Server Error"

    def __init__(self, detail: str = "", *, headers: list[tuple[bytes, bytes]] | None = None):
        super().__init__(detail or self.reason)
        self.headers = headers or []


class BadRequest(HTTPError):
    status = 400
    reason = "Bad Request"


class Forbidden(HTTPError):
    status = 403
    reason = "Forbidden"


class NotFound(HTTPError):
    status = 404
    reason = "Not Found"


class MethodNotAllowed(HTTPError):
    status = 405
    reason = "Method Not Allowed"


class RequestTimeout(HTTPError):
    status = 408
    reason = "Request Timeout"


class PayloadTooLarge(HTTPError):
    status = 413
    reason = "Payload Too Large"


class URITooLong(HTTPError):
    status = 414
    reason = "URI Too Long"


class HeaderFieldsTooLarge(HTTPError):
    status = 431
    reason = "Request Header Fields Too Large"


class BadGateway(HTTPError):
    status = 502
    reason = "Bad Gateway"


class ServiceUnavailable(HTTPError):
    status = 503
    reason = "Service Unavailable"


class GatewayTimeout(HTTPError):
    status = 504
    reason = "Gateway Timeout"


class VersionNotSupported(HTTPError):
    status = 505
    reason = "HTTP Version Not Supported"
