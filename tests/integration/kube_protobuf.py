"""Reads the one protobuf body the fake API server receives: a Secret that helm stores.

helm keeps each release in a Secret that it writes through client-go's typed clients,
which send Kubernetes' protobuf encoding: the magic ``k8s\\0``, then a
``runtime.Unknown`` whose ``raw`` field is the ``core/v1.Secret`` message. Only the
fields helm sets are read (field numbers from k8s.io/api/core/v1/generated.proto and
apimachinery's meta/v1/generated.proto).
"""

from __future__ import annotations

import base64

MAGIC = b"k8s\x00"
PROTOBUF = "application/vnd.kubernetes.protobuf"


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7


def _fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) of every field of one message: ints, or bytes for the rest."""
    fields, at = [], 0
    while at < len(data):
        key, at = _varint(data, at)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, at = _varint(data, at)
        elif wire == 2:
            length, at = _varint(data, at)
            value, at = data[at:at + length], at + length
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, at = data[at:at + size], at + size
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        fields.append((number, value))
    return fields


def _string_map(entries: list[bytes], text: bool = True) -> dict:
    result = {}
    for entry in entries:
        parts = dict(_fields(entry))
        value = parts.get(2, b"")
        result[parts[1].decode()] = value.decode() if text else base64.b64encode(value).decode()
    return result


def _metadata(data: bytes) -> dict:
    fields = _fields(data)
    meta: dict = {}
    for number, key in ((1, "name"), (2, "generateName"), (3, "namespace")):
        values = [v for n, v in fields if n == number]
        if values:
            meta[key] = values[0].decode()
    for number, key in ((11, "labels"), (12, "annotations")):
        entries = [v for n, v in fields if n == number]
        if entries:
            meta[key] = _string_map(entries)
    return meta


def secret_from_protobuf(body: bytes) -> dict:
    """The Secret of a protobuf request body, as its JSON form."""
    if not body.startswith(MAGIC):
        raise ValueError("not a Kubernetes protobuf body (no k8s\\0 prefix)")
    unknown = dict(_fields(body[len(MAGIC):]))
    type_meta = dict(_fields(unknown.get(1, b"")))
    if type_meta.get(2, b"").decode() != "Secret":
        raise ValueError(f"only Secrets are read, not {type_meta.get(2, b'')!r}")
    fields = _fields(unknown[2])
    secret = {"apiVersion": "v1", "kind": "Secret",
              "metadata": _metadata(next(v for n, v in fields if n == 1))}
    data = [v for n, v in fields if n == 2]
    if data:
        secret["data"] = _string_map(data, text=False)
    kind = [v for n, v in fields if n == 3]
    if kind:
        secret["type"] = kind[0].decode()
    return secret
