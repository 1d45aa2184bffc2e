"""Length-prefixed JSON frames between the pool and its worker processes.

JSON, never pickle, in both directions: the parent must be able to read what a worker
sends without trusting it, since the worker runs untrusted code.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any

_HEADER = struct.Struct("!I")
HEADER_BYTES = _HEADER.size  # the length prefix before each payload
MAX_FRAME_BYTES = 64 * 1024 * 1024


class FrameError(Exception):
    """The other side sent something that is not a valid frame."""


class UnencodableMessage(ValueError):
    """A message holds what JSON cannot carry (NaN, Infinity, a lone surrogate...)."""


def encode(message: Any) -> bytes:
    try:
        text = json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        return text.encode()
    except (ValueError, TypeError) as exc:  # UnicodeEncodeError is a ValueError
        raise UnencodableMessage(str(exc)) from None


def decode(payload: bytes) -> Any:
    return json.loads(payload)


def write_frame(fd: int, payload: bytes) -> None:
    data = memoryview(_HEADER.pack(len(payload)) + payload)
    while data:
        written = os.write(fd, data)
        data = data[written:]


def _read_exact(fd: int, size: int) -> bytes | None:
    chunks = []
    while size:
        chunk = os.read(fd, min(size, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int) -> bytes | None:
    """One frame's payload, or None when the other side closed the pipe."""
    header = _read_exact(fd, _HEADER.size)
    if header is None:
        return None
    (size,) = _HEADER.unpack(header)
    if size > MAX_FRAME_BYTES:
        raise FrameError(f"frame of {size} bytes exceeds the {MAX_FRAME_BYTES} byte limit")
    payload = _read_exact(fd, size)
    if payload is None:
        return None
    return payload


class FrameAssembler:
    """Collects bytes as they arrive on a reader and yields whole frames, in order."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._start = 0

    def add(self, data: bytes) -> None:
        if self._start:
            del self._buffer[:self._start]
            self._start = 0
        self._buffer += data

    def next(self) -> bytes | None:
        """The payload of the next whole frame, taken off the buffer; None until one is in."""
        start = self._start
        if len(self._buffer) - start < _HEADER.size:
            return None
        (size,) = _HEADER.unpack_from(self._buffer, start)
        if size > MAX_FRAME_BYTES:
            raise FrameError(f"frame of {size} bytes exceeds the {MAX_FRAME_BYTES} byte limit")
        end = start + _HEADER.size + size
        if len(self._buffer) < end:
            return None
        self._start = end
        return bytes(self._buffer[start + _HEADER.size:end])

    def feed(self, data: bytes) -> bytes | None:
        """Add data; the payload of the next whole frame once it has arrived, else None."""
        self.add(data)
        return self.next()
