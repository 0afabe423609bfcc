"""The safetensors header: one parser and one writer, for local shards, remote ranges and our own files.

A safetensors file is an 8-byte little-endian length N, N bytes of JSON (each tensor's ``dtype``,
``shape`` and ``data_offsets`` relative to the data, plus an optional ``__metadata__`` object of
strings), then the data. Reading the header alone tells what a file holds without loading a tensor.
Errors are :class:`HeaderError` with the reason only; callers add the file's name and what to do.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit on the JSON header
METADATA = "__metadata__"


class HeaderError(ValueError):
    """Bytes that are not a safetensors header; the message says why."""


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int  # offsets into the data, which starts after the header
    end: int


@dataclass(frozen=True)
class Header:
    length: int  # of the JSON
    tensors: tuple[TensorEntry, ...]  # in the JSON's order
    metadata: object  # a dict of strings in a well-formed file: the caller checks what it needs

    @property
    def data_start(self) -> int:
        return 8 + self.length


def header_length(prefix: bytes) -> int:
    """N from the file's first 8 bytes; the caller checks it against the file's size."""
    if len(prefix) < 8:
        raise HeaderError(f"shorter than 8 bytes ({len(prefix)})")
    return struct.unpack("<Q", prefix[:8])[0]


def parse_header(raw: bytes) -> Header:
    """The JSON part of a header (the N bytes after the length) -> its tensors and metadata.

    The message of a :class:`HeaderError` is the underlying error's (JSON, a missing key, a wrong type)."""
    try:
        table = json.loads(raw)
        if not isinstance(table, dict):
            raise TypeError("not an object")
        tensors = []
        for name, entry in table.items():
            if name == METADATA:
                continue
            begin, end = (int(x) for x in entry["data_offsets"])
            shape = tuple(int(d) for d in entry["shape"])
            tensors.append(TensorEntry(name, str(entry["dtype"]), shape, begin, end))
    except (ValueError, KeyError, TypeError) as exc:  # JSON errors are ValueErrors
        raise HeaderError(str(exc)) from None
    return Header(len(raw), tuple(tensors), table.get(METADATA) or {})


def read_header(path: Path | str, limit: int = MAX_HEADER_BYTES) -> Header:
    """A local file's header, read without its data; OSError if it cannot be read."""
    with open(path, "rb") as f:
        length = header_length(f.read(8))
        if not 0 < length <= limit:
            raise HeaderError(f"a header of {length} bytes")
        raw = f.read(length)
    if len(raw) < length:
        raise HeaderError(f"a header of {length} bytes in a file of {8 + len(raw)}")
    return parse_header(raw)


def encode_header(tensors: list[tuple[str, str, tuple[int, ...], int]]) -> bytes:
    """The length and JSON for tensors ``(name, dtype, shape, nbytes)`` stored one after another in
    this order, padded with spaces to 8 bytes as safetensors writes it."""
    table, offset = {}, 0
    for name, dtype, shape, nbytes in tensors:
        table[name] = {
            "dtype": dtype,
            "shape": list(shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    blob = json.dumps(table, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    return struct.pack("<Q", len(blob)) + blob
