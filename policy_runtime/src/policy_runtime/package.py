"""Upstream AIOS code packages: a zip or tar archive holding ``code/function.py``.

Archives are read in memory only (nothing is extracted to disk) and every byte that is
decompressed passes through a bounded stream: reading stops with an ArchiveError at
``MAX_UNPACKED_BYTES`` decompressed bytes or after ``MAX_SECONDS``, whatever the archive's
headers claim. tarfile only ever sees the uncompressed stream, in small chunks, and
GNU long-name and pax headers larger than ``MAX_HEADER_BYTES`` are refused before they are
read. Zip members are decompressed by the same bounded decompressors.
"""

from __future__ import annotations

import base64
import binascii
import bz2
import io
import lzma
import struct
import tarfile
import time
import zipfile
import zlib
from collections.abc import Callable

SOURCE_MEMBER = "code/function.py"
REQUIREMENTS_MEMBER = "code/requirements.txt"
_MAX_MEMBERS = 1000
# Decompressed bytes one archive may produce in all (members, headers and padding).
MAX_UNPACKED_BYTES = 16 * 1024 * 1024
# Time one archive may take to read; far above what a real code package needs.
MAX_SECONDS = 5.0
# GNU long names (@LongLink) and pax extended headers: a path never needs more.
MAX_HEADER_BYTES = 64 * 1024
_CHUNK = 64 * 1024
_REQUIREMENTS_BYTES = 64 * 1024
_LONG_HEADER_TYPES = frozenset(
    {tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE,
     tarfile.SOLARIS_XHDTYPE}
)
_ZIP_METHODS = {
    zipfile.ZIP_STORED: "stored",
    zipfile.ZIP_DEFLATED: "deflate",
    zipfile.ZIP_BZIP2: "bzip2",
    zipfile.ZIP_LZMA: "lzma",
}
_ZLIB = type(zlib.decompressobj())
_PACK_HINT = (
    "pack the code/ directory with 'zip -r policy.zip code/' or 'tar -cJf policy.tar.xz code/'"
)


class ArchiveError(Exception):
    """The archive cannot be used; the message says why and what to do."""


class ArchiveTooLarge(ArchiveError):
    """A member of the archive is larger than the code limit."""


class _Budget:
    """The decompressed bytes and the time left to one archive."""

    def __init__(self, max_bytes: int, seconds: float) -> None:
        self.max_bytes = max_bytes
        self.left = max_bytes
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds

    def spend(self, count: int) -> None:
        self.left -= count
        if self.left < 0:
            raise ArchiveError(
                f"the archive decompresses to more than {self.max_bytes} bytes; a code "
                f"package needs far less: {_PACK_HINT}"
            )
        if time.monotonic() > self.deadline:
            raise ArchiveError(
                f"reading the archive took longer than {self.seconds:g} s; {_PACK_HINT}"
            )


class _Decompressor:
    """One of zlib/bz2/lzma decompression with output per call capped at ``_CHUNK``,
    restarted for concatenated streams (``gzip`` and ``bzip2`` write those)."""

    def __init__(self, factory: Callable[[], object]) -> None:
        self.factory = factory
        self.inner = factory()
        self.pending = b""
        self.eof = False

    def _unused(self) -> bytes:
        return getattr(self.inner, "unused_data", b"")

    def decompress(self, data: bytes) -> bytes:
        inner = self.inner
        if isinstance(inner, _ZLIB):
            out = inner.decompress(self.pending + data, _CHUNK)
            self.pending = inner.unconsumed_tail
        else:
            # bz2/lzma keep unconsumed input themselves; b"" asks for more output
            out = inner.decompress(self.pending + data, _CHUNK)  # type: ignore[attr-defined]
            self.pending = b""
        if getattr(inner, "eof", False):
            rest = self._unused() + self.pending
            self.pending = b""
            if rest.strip(b"\0"):
                self.inner = self.factory()
                self.pending = rest
            else:
                self.eof = True
        return out

    def needs_input(self) -> bool:
        if self.eof or self.pending:
            return False
        if isinstance(self.inner, _ZLIB):
            return True
        return bool(getattr(self.inner, "needs_input", True))


def _factory(data: bytes) -> Callable[[], object] | None:
    """The decompressor for ``data``'s magic number; None for an uncompressed stream."""
    if data[:2] == b"\x1f\x8b":
        return lambda: zlib.decompressobj(wbits=31)
    if data[:3] == b"BZh":
        return bz2.BZ2Decompressor
    if data[:6] == b"\xfd7zXZ\x00":
        return lambda: lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    return None


class _BoundedStream(io.RawIOBase):
    """The decompressed bytes of ``raw``, read in chunks and charged to ``budget``."""

    def __init__(
        self, raw: bytes, factory: Callable[[], object] | None, budget: _Budget,
        *, sized: bool = False,
    ) -> None:
        super().__init__()
        self.raw = memoryview(raw)
        self.position = 0
        self.decompressor = _Decompressor(factory) if factory is not None else None
        self.budget = budget
        # sized: the caller knows the length (a zip member) and checks it; a compressed
        # stream may then end without its end marker
        self.sized = sized
        self.buffer = b""

    def readable(self) -> bool:
        return True

    def _next_chunk(self) -> bytes:
        if self.decompressor is None:
            chunk = bytes(self.raw[self.position:self.position + _CHUNK])
            self.position += len(chunk)
            return chunk
        while not self.decompressor.eof:
            data = b""
            exhausted = False
            if self.decompressor.needs_input():
                data = bytes(self.raw[self.position:self.position + _CHUNK])
                self.position += len(data)
                exhausted = not data
            try:
                out = self.decompressor.decompress(data)
            except (OSError, EOFError, zlib.error, lzma.LZMAError) as exc:
                raise ArchiveError(f"the compressed archive is damaged: {exc}") from None
            if out:
                return out
            if exhausted:
                if self.sized:
                    return b""
                raise ArchiveError(f"the compressed archive is truncated; {_PACK_HINT}")
            self.budget.spend(0)  # the deadline, also while nothing comes out
        return b""

    def readinto(self, target) -> int:  # type: ignore[no-untyped-def]
        if not self.buffer:
            self.buffer = self._next_chunk()
            self.budget.spend(len(self.buffer))
        count = min(len(target), len(self.buffer))
        target[:count] = self.buffer[:count]
        self.buffer = self.buffer[count:]
        return count


class _BoundedTarInfo(tarfile.TarInfo):
    """Refuses long-name and pax headers larger than MAX_HEADER_BYTES before reading them."""

    def _proc_member(self, tarfile_: tarfile.TarFile):  # type: ignore[no-untyped-def]
        if self.type in _LONG_HEADER_TYPES and self.size > MAX_HEADER_BYTES:
            kind = "long-name" if self.type in (
                tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK) else "pax"
            raise ArchiveError(
                f"the archive has a {kind} header of {self.size} bytes; the limit is "
                f"{MAX_HEADER_BYTES}: {_PACK_HINT}"
            )
        return super()._proc_member(tarfile_)  # type: ignore[misc]


def _normal(name: str) -> str:
    return name[2:] if name.startswith("./") else name


def _check_requirements(text: bytes) -> None:
    wanted = [
        line.strip()
        for line in text.decode("utf-8", "replace").splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    if wanted:
        raise ArchiveError(
            f"{REQUIREMENTS_MEMBER} asks for {', '.join(wanted)}: a sandboxed policy cannot "
            "install packages; remove the file and use only the allowed modules"
        )


def _decode(data: bytes, max_code_bytes: int) -> str:
    if len(data) > max_code_bytes:
        raise ArchiveTooLarge(
            f"{SOURCE_MEMBER} is larger than the {max_code_bytes} byte code limit"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ArchiveError(f"{SOURCE_MEMBER} is not UTF-8 text") from None


def _lzma_zip_factory(raw: bytes) -> tuple[Callable[[], object], int]:
    """Zip's LZMA members: a 4-byte header, LZMA1 properties, then the raw stream."""
    if len(raw) < 9:
        raise ArchiveError("a zip member's LZMA data is truncated")
    (size,) = struct.unpack("<H", raw[2:4])
    if size != 5:
        raise ArchiveError("a zip member's LZMA properties are damaged")
    props, (dict_size,) = raw[4], struct.unpack("<I", raw[5:9])
    if props >= 9 * 5 * 5:
        raise ArchiveError("a zip member's LZMA properties are damaged")
    lzma1 = {
        "id": lzma.FILTER_LZMA1, "dict_size": dict_size,
        "lc": props % 9, "lp": (props // 9) % 5, "pb": props // 45,
    }
    return (lambda: lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=[lzma1])), 9


def _zip_member(data: bytes, info: zipfile.ZipInfo, limit: int, budget: _Budget) -> bytes:
    """Up to ``limit`` decompressed bytes of a zip member, through the bounded stream."""
    name = _normal(info.filename)
    if info.flag_bits & 0x1:
        raise ArchiveError(
            f"{name} in the zip archive is encrypted; package the code without a password"
        )
    if info.compress_type not in _ZIP_METHODS:
        raise ArchiveError(
            f"{name} in the zip archive uses compression method {info.compress_type}, "
            f"which is not supported; use one of {', '.join(_ZIP_METHODS.values())} "
            "(zip's default is deflate)"
        )
    header = data[info.header_offset:info.header_offset + 30]
    if len(header) < 30 or header[:4] != b"PK\x03\x04":
        raise ArchiveError(f"the zip archive is damaged: no local header for {name}")
    name_length, extra_length = struct.unpack("<HH", header[26:30])
    start = info.header_offset + 30 + name_length + extra_length
    raw = data[start:start + info.compress_size]
    factory: Callable[[], object] | None
    if info.compress_type == zipfile.ZIP_DEFLATED:
        factory = lambda: zlib.decompressobj(wbits=-15)  # noqa: E731
    elif info.compress_type == zipfile.ZIP_BZIP2:
        factory = bz2.BZ2Decompressor
    elif info.compress_type == zipfile.ZIP_LZMA:
        factory, skip = _lzma_zip_factory(raw)
        raw = raw[skip:]
    else:
        factory = None
    stream = io.BufferedReader(_BoundedStream(raw, factory, budget, sized=True), _CHUNK)
    content = stream.read(limit + 1)
    if len(content) <= limit and zlib.crc32(content) != info.CRC:
        raise ArchiveError(f"the zip archive is damaged: {name} fails its CRC check")
    return content


def _from_zip(data: bytes, max_code_bytes: int, budget: _Budget) -> str:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        infos = {_normal(i.filename): i for i in archive.infolist()[:_MAX_MEMBERS]}
    requirements = infos.get(REQUIREMENTS_MEMBER)
    if requirements is not None:
        _check_requirements(_zip_member(data, requirements, _REQUIREMENTS_BYTES, budget))
    info = infos.get(SOURCE_MEMBER)
    if info is None:
        raise ArchiveError(f"the archive has no {SOURCE_MEMBER}")
    return _decode(_zip_member(data, info, max_code_bytes, budget), max_code_bytes)


def _from_tar(data: bytes, max_code_bytes: int, budget: _Budget) -> str:
    source: bytes | None = None
    stream = io.BufferedReader(_BoundedStream(data, _factory(data), budget), _CHUNK)
    with tarfile.open(fileobj=stream, mode="r|", tarinfo=_BoundedTarInfo) as archive:
        for count, member in enumerate(archive):
            if count >= _MAX_MEMBERS:
                raise ArchiveError(f"the archive has more than {_MAX_MEMBERS} members; "
                                   "package only code/")
            name = _normal(member.name)
            if name not in (SOURCE_MEMBER, REQUIREMENTS_MEMBER):
                continue
            if not member.isfile():
                raise ArchiveError(f"{name} in the archive is not a regular file")
            handle = archive.extractfile(member)
            content = handle.read(max_code_bytes + 1) if handle else b""
            if name == REQUIREMENTS_MEMBER:
                _check_requirements(content)
            else:
                source = content
    if source is None:
        raise ArchiveError(f"the archive has no {SOURCE_MEMBER}")
    return _decode(source, max_code_bytes)


def source_from_archive(
    data: bytes,
    max_code_bytes: int,
    *,
    max_unpacked_bytes: int = MAX_UNPACKED_BYTES,
    max_seconds: float = MAX_SECONDS,
) -> str:
    """The policy source inside a zip or tar (gz/xz/bz2) archive.

    Blocking and CPU-bound (within its bounds): call it from a worker thread.
    """
    budget = _Budget(max_unpacked_bytes, max_seconds)
    if zipfile.is_zipfile(io.BytesIO(data)):
        try:
            return _from_zip(data, max_code_bytes, budget)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError) as exc:
            raise ArchiveError(f"the zip archive is damaged: {exc}") from None
    try:
        return _from_tar(data, max_code_bytes, budget)
    except (tarfile.TarError, EOFError):
        raise ArchiveError(
            f"code_archive is neither a zip nor a tar archive; {_PACK_HINT}"
        ) from None


def decode_base64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ArchiveError("code_archive is not valid base64") from None
