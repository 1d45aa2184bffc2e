"""Code archives: every format a policy package comes in, and the bombs that must not work.

Each bomb is refused by ``source_from_archive`` with an ArchiveError naming the problem,
within its bounds (the decompressed bytes and the time of one archive); the same
archives are sent to the real service in test_hostile_requests.py.
"""

from __future__ import annotations

import bz2
import functools
import gzip
import io
import lzma
import tarfile
import zipfile

import pytest

from policy_runtime import package

SOURCE = (
    b"class AIOSv1PolicyRule:\n"
    b"    def __init__(self, rule_id, settings, parameters):\n"
    b"        pass\n\n"
    b"    def eval(self, parameters, input_data, context):\n"
    b"        return {'allowed': True, 'input_data': input_data}\n"
)
MAX_CODE = 256 * 1024
MiB = 1024 * 1024


def tar_bytes(members: list[tuple[tarfile.TarInfo, bytes]], fmt: int = tarfile.GNU_FORMAT) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as archive:
        for info, data in members:
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def code_tar(compress=lambda data: data, extra: tuple = ()) -> bytes:
    return compress(tar_bytes([(tarfile.TarInfo("code/function.py"), SOURCE), *extra]))


def code_zip(method: int = zipfile.ZIP_DEFLATED, data: bytes = SOURCE) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=method) as archive:
        archive.writestr("code/function.py", data)
    return buffer.getvalue()


def patched_zip(flag_bits: int = 0, method: int | None = None) -> bytes:
    """A zip whose member is marked encrypted, or names another compression method, in
    both its local header and the central directory."""
    raw = bytearray(code_zip())
    for signature, flags_at, method_at in ((b"PK\x03\x04", 6, 8), (b"PK\x01\x02", 8, 10)):
        at = raw.index(signature)
        raw[at + flags_at] |= flag_bits
        if method is not None:
            raw[at + method_at:at + method_at + 2] = method.to_bytes(2, "little")
    return bytes(raw)


def zero_member_header(size: int, name: str = "big") -> bytes:
    """The tar header of a member that claims ``size`` bytes (its data follows)."""
    info = tarfile.TarInfo(name)
    info.size = size
    return info.tobuf(format=tarfile.GNU_FORMAT)


@functools.cache
def zero_stream(compressor: str, size: int) -> bytes:
    """``size`` zero bytes compressed as one stream, 1 MiB at a time."""
    engine = {
        "bz2": lambda: bz2.BZ2Compressor(9),
        "xz": lambda: lzma.LZMACompressor(format=lzma.FORMAT_XZ),
    }[compressor]()
    chunk = bytes(MiB)
    out = b"".join(engine.compress(chunk) for _ in range(size // MiB))
    return out + engine.flush()


def tar_bomb(claimed: int, compressor: str = "bz2") -> bytes:
    """A compressed tar whose one member claims ``claimed`` bytes of zeros; the data is
    at most 64 MiB of zeros (repeated compressed streams for more)."""
    if compressor == "gz":
        zeros = gzip.compress(bytes(64 * MiB), 9)
        head = gzip.compress(zero_member_header(claimed))
    else:
        zeros = zero_stream(compressor, 64 * MiB)
        head = {"bz2": bz2.compress, "xz": lzma.compress}[compressor](
            zero_member_header(claimed))
    return head + zeros * max(1, min(claimed // (64 * MiB), 32))


def long_name_bomb(claimed: int = 1 << 30) -> bytes:
    """A GNU ``@LongLink`` header that claims ``claimed`` bytes of name (bz2, 1 KiB)."""
    info = tarfile.TarInfo("././@LongLink")
    info.type = tarfile.GNUTYPE_LONGNAME
    info.size = claimed
    return bz2.compress(info.tobuf(format=tarfile.GNU_FORMAT) + b"a" * 4096)


def pax_bomb() -> bytes:
    info = tarfile.TarInfo("code/function.py")
    info.pax_headers = {"comment": "x" * MiB}
    return bz2.compress(tar_bytes([(info, SOURCE)], fmt=tarfile.PAX_FORMAT))


def zip_bomb(method: int) -> bytes:
    return code_zip(method, bytes(64 * MiB))


@pytest.mark.parametrize(
    "archive",
    [
        pytest.param(code_tar(), id="tar"),
        pytest.param(code_tar(gzip.compress), id="tar.gz"),
        pytest.param(code_tar(lambda d: gzip.compress(d[:700]) + gzip.compress(d[700:])),
                     id="tar.gz-two-members"),
        pytest.param(code_tar(bz2.compress), id="tar.bz2"),
        pytest.param(code_tar(lzma.compress), id="tar.xz"),
        pytest.param(code_tar(bz2.compress, extra=(
            (tarfile.TarInfo("code/" + "long-name-" * 30 + ".txt"), b"x"),)), id="long-name"),
        pytest.param(code_zip(zipfile.ZIP_STORED), id="zip-stored"),
        pytest.param(code_zip(zipfile.ZIP_DEFLATED), id="zip-deflate"),
        pytest.param(code_zip(zipfile.ZIP_BZIP2), id="zip-bzip2"),
        pytest.param(code_zip(zipfile.ZIP_LZMA), id="zip-lzma"),
    ],
)
def test_every_archive_format_gives_the_source(archive: bytes) -> None:
    assert package.source_from_archive(archive, MAX_CODE) == SOURCE.decode()


@pytest.mark.parametrize(
    ("archive", "error", "needle"),
    [
        pytest.param(tar_bomb(64 * MiB), package.ArchiveError, "decompresses to more than",
                     id="bz2-64MiB"),
        pytest.param(tar_bomb(2 << 30), package.ArchiveError, "decompresses to more than",
                     id="bz2-2GiB"),
        pytest.param(tar_bomb(64 * MiB, "gz"), package.ArchiveError,
                     "decompresses to more than", id="gz-64MiB"),
        pytest.param(tar_bomb(64 * MiB, "xz"), package.ArchiveError,
                     "decompresses to more than", id="xz-64MiB"),
        pytest.param(long_name_bomb(), package.ArchiveError, "long-name header of 1073741824",
                     id="longlink-1GiB"),
        pytest.param(pax_bomb(), package.ArchiveError, "pax header", id="pax-1MiB"),
        pytest.param(patched_zip(flag_bits=0x1), package.ArchiveError, "encrypted",
                     id="zip-encrypted"),
        pytest.param(patched_zip(method=99), package.ArchiveError, "compression method 99",
                     id="zip-aes"),
        pytest.param(patched_zip(method=9), package.ArchiveError, "compression method 9",
                     id="zip-deflate64"),
        pytest.param(zip_bomb(zipfile.ZIP_BZIP2), package.ArchiveTooLarge, "code limit",
                     id="zip-bzip2-64MiB"),
        pytest.param(zip_bomb(zipfile.ZIP_LZMA), package.ArchiveTooLarge, "code limit",
                     id="zip-lzma-64MiB"),
        pytest.param(code_tar(bz2.compress)[:60], package.ArchiveError, "truncated",
                     id="truncated-bz2"),
    ],
)
def test_bombs_are_refused_naming_the_problem(
    archive: bytes, error: type[Exception], needle: str
) -> None:
    with pytest.raises(error, match=needle):
        package.source_from_archive(archive, MAX_CODE)


def test_the_time_bound_stops_reading() -> None:
    """An archive that would stay within the byte bound stops at the deadline instead."""
    with pytest.raises(package.ArchiveError, match="took longer than"):
        package.source_from_archive(
            tar_bomb(64 * MiB), MAX_CODE, max_unpacked_bytes=1 << 40, max_seconds=0.05
        )
