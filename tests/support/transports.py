"""A transport with no socket, for driving wslb's protocols byte by byte (the exchange's unit
tests, bench/micro_http.py): it records what is written and plays the peer's side of a close."""

from __future__ import annotations

import asyncio
from typing import Any

Address = tuple[str, int]


class FakeTransport(asyncio.Transport):
    """Stands for a connected socket: ``take()`` returns what was written since the last take
    (``keep=False`` only counts, for benchmarks); ``close()`` tells the protocol as a real
    transport does, at the next loop iteration."""

    def __init__(
        self,
        peer: Address = ("127.0.0.1", 5555),
        local: Address = ("127.0.0.1", 80),
        *,
        keep: bool = True,
    ) -> None:
        super().__init__()
        self.peer = peer
        self.local = local
        self.keep = keep
        self.buffer = bytearray()
        self.written = 0
        self.writes = 0
        self.closing = False
        self.eof_written = False
        self.reading = True
        self.protocol: asyncio.BaseProtocol | None = None

    # ---- what the protocol calls
    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += len(data)
        self.writes += 1
        if self.keep:
            self.buffer += data

    def writelines(self, data: Any) -> None:
        for piece in data:
            self.write(piece)

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": self.peer, "sockname": self.local}.get(name, default)

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof_written = True

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self.protocol is not None
        return self.protocol

    def get_write_buffer_size(self) -> int:
        return 0

    def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        if self.protocol is not None:
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()

    # ---- what the test reads
    def take(self) -> bytes:
        data = bytes(self.buffer)
        self.buffer.clear()
        return data
