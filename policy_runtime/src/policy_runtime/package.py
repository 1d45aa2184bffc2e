"""Upstream AIOS code packages: a zip or tar archive holding ``code/function.py``.

Archives are read in memory only (nothing is extracted to disk) and with bounds on
member count and decompressed size, so a compressed bomb cannot exhaust the service.
"""

from __future__ import annotations

import base64
import binascii
import io
import tarfile
import zipfile

SOURCE_MEMBER = "code/function.py"
REQUIREMENTS_MEMBER = "code/requirements.txt"
_MAX_MEMBERS = 1000
_MAX_SCANNED_BYTES = 16 * 1024 * 1024


class ArchiveError(Exception):
    """The archive cannot be used; the message says why and what to do."""


class ArchiveTooLarge(ArchiveError):
    """A member of the archive is larger than the code limit."""


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


def _from_zip(data: bytes, max_code_bytes: int) -> str:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        infos = {_normal(i.filename): i for i in archive.infolist()[:_MAX_MEMBERS]}
        requirements = infos.get(REQUIREMENTS_MEMBER)
        if requirements is not None:
            with archive.open(requirements) as member:
                _check_requirements(member.read(64 * 1024))
        info = infos.get(SOURCE_MEMBER)
        if info is None:
            raise ArchiveError(f"the archive has no {SOURCE_MEMBER}")
        with archive.open(info) as member:
            return _decode(member.read(max_code_bytes + 1), max_code_bytes)


def _from_tar(data: bytes, max_code_bytes: int) -> str:
    source: bytes | None = None
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|*") as archive:
        for count, member in enumerate(archive):
            if count >= _MAX_MEMBERS or member.offset_data > _MAX_SCANNED_BYTES:
                raise ArchiveError("the archive is too large to scan; package only code/")
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


def source_from_archive(data: bytes, max_code_bytes: int) -> str:
    """The policy source inside a zip or tar (gz/xz/bz2) archive."""
    if zipfile.is_zipfile(io.BytesIO(data)):
        try:
            return _from_zip(data, max_code_bytes)
        except zipfile.BadZipFile as exc:
            raise ArchiveError(f"the zip archive is damaged: {exc}") from None
    try:
        return _from_tar(data, max_code_bytes)
    except tarfile.TarError:
        raise ArchiveError(
            "code_archive is neither a zip nor a tar archive; pack the code/ directory "
            "with 'zip -r policy.zip code/' or 'tar -cJf policy.tar.xz code/'"
        ) from None


def decode_base64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ArchiveError("code_archive is not valid base64") from None
