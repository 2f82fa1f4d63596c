"""A reader of CTranslate2's ``model.bin`` (binary versions 1-6), written from the format its
writer documents (``ctranslate2/specs/model_spec.py: ModelSpec._serialize``) and its loader
reads (``src/models/model.cc: Model::load``).

All integers little-endian::

    uint32 binary_version
    (version >= 2) string spec_name, uint32 spec_revision
    uint32 n_variables, then per variable:
        string name, uint8 rank, uint32 dims[rank],
        (version >= 4) uint8 dtype id, uint32 n_bytes   | (< 4) uint8 item size, uint32 n_items
        n_bytes of data, row-major
    (version >= 3) uint32 n_aliases, then per alias: string alias, string variable name

A ``string`` is a uint16 length counting a trailing NUL, then that many bytes. dtype ids follow
CTranslate2's ``DataType`` enum: float32, int8, int16, int32, float16, bfloat16.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAX_BINARY_VERSION = 6
_DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
_ITEM_SIZE_DTYPES = {4: "float32", 2: "int16", 1: "int8"}


class ModelFormatError(ValueError):
    """``model.bin`` is truncated, of an unknown version, or holds an unknown type."""


@dataclass(frozen=True)
class Ct2Model:
    """The variables of one model, by name (aliases resolved), as NumPy arrays."""

    spec: str
    revision: int
    binary_version: int
    variables: dict[str, np.ndarray]

    def __getitem__(self, name: str) -> np.ndarray:
        return self.variables[name]

    def float32(self, name: str) -> np.ndarray:
        """A variable as float32 (float16 and bfloat16 widened exactly)."""
        return self.variables[name].astype(np.float32)


class _Cursor:
    def __init__(self, data: bytes) -> None:
        self.data, self.offset = data, 0

    def take(self, size: int) -> bytes:
        if self.offset + size > len(self.data):
            raise ModelFormatError(f"model.bin is truncated at byte {self.offset}")
        chunk = self.data[self.offset:self.offset + size]
        self.offset += size
        return chunk

    def unpack(self, fmt: str):
        values = struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))
        return values if len(values) > 1 else values[0]

    def string(self) -> str:
        length = self.unpack("H")
        return self.take(length).rstrip(b"\0").decode("utf-8")


def _array(raw: bytes, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    if dtype == "bfloat16":
        bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        return bits.view(np.float32).reshape(shape)
    return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape)


def read_model(model_dir: str | Path) -> Ct2Model:
    """Every variable of ``model_dir/model.bin``."""
    cursor = _Cursor(Path(model_dir, "model.bin").read_bytes())
    version = cursor.unpack("I")
    if not 1 <= version <= MAX_BINARY_VERSION:
        raise ModelFormatError(f"unsupported model.bin binary version {version}")
    spec, revision = (cursor.string(), cursor.unpack("I")) if version >= 2 else ("", 1)
    variables: dict[str, np.ndarray] = {}
    for _ in range(cursor.unpack("I")):
        name = cursor.string()
        rank = cursor.unpack("B")
        shape = tuple(cursor.unpack(f"{rank}I")) if rank > 1 else (
            (cursor.unpack("I"),) if rank == 1 else ())
        if version >= 4:
            type_id, n_bytes = cursor.unpack("BI")
            if type_id >= len(_DTYPES):
                raise ModelFormatError(f"variable {name}: unknown dtype id {type_id}")
            dtype = _DTYPES[type_id]
        else:
            item_size, n_items = cursor.unpack("BI")
            dtype, n_bytes = _ITEM_SIZE_DTYPES[item_size], n_items * item_size
        expected = int(np.prod(shape, dtype=np.int64)) * (2 if dtype == "bfloat16"
                                                           else np.dtype(dtype).itemsize)
        if n_bytes != expected:
            raise ModelFormatError(f"variable {name}: {n_bytes} bytes for shape {shape} {dtype}")
        variables[name] = _array(cursor.take(n_bytes), dtype, shape)
    if version >= 3:
        for _ in range(cursor.unpack("I")):
            alias, target = cursor.string(), cursor.string()
            variables[alias] = variables[target]
    if cursor.offset != len(cursor.data):
        raise ModelFormatError(f"{len(cursor.data) - cursor.offset} bytes after the last record")
    return Ct2Model(spec, revision, version, variables)
