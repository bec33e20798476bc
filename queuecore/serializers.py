"""The serializer seam: how message values become bytes and back."""

from __future__ import annotations

import json
import threading
from typing import Any

import msgpack

from queuecore.errors import InvalidOption, SerializationError


class Serializer:
    """Turns values into bytes and back. Subclass and pass an instance as
    ``Queues(..., serializer=MySerializer())`` to use another format."""

    name = "base"

    def dumps(self, value: Any) -> bytes:
        raise NotImplementedError("Serializer.dumps(value) must return bytes")

    def loads(self, data: bytes) -> Any:
        raise NotImplementedError("Serializer.loads(data) must return the value")


# A Packer per thread, made once (msgpack.packb builds a new one per call,
# which costs more than packing a small message); kept outside the
# serializer so that it stays copyable and picklable.
_packers = threading.local()


class MsgpackSerializer(Serializer):
    """Any msgpack-able value: None, bool, int, float, str, bytes, lists, dicts."""

    name = "msgpack"

    def dumps(self, value: Any) -> bytes:
        try:
            packer = _packers.packer
        except AttributeError:
            packer = _packers.packer = msgpack.Packer(use_bin_type=True)
        try:
            return packer.pack(value)  # type: ignore[no-any-return]
        except (TypeError, ValueError, OverflowError) as exc:
            del _packers.packer  # never reuse a packer that failed half-way
            raise SerializationError(f"cannot encode {type(value).__name__} with msgpack: {exc}") from exc
        except BaseException:
            del _packers.packer
            raise

    def loads(self, data: bytes) -> Any:
        try:
            return msgpack.unpackb(data, raw=False, strict_map_key=False)
        except Exception as exc:  # msgpack raises several unrelated types
            raise SerializationError(f"cannot decode {len(data)} bytes as msgpack: {exc}") from exc


class JsonSerializer(Serializer):
    """JSON values, stored as UTF-8."""

    name = "json"

    def dumps(self, value: Any) -> bytes:
        try:
            return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
        except (TypeError, ValueError) as exc:
            raise SerializationError(f"cannot encode {type(value).__name__} as JSON: {exc}") from exc

    def loads(self, data: bytes) -> Any:
        try:
            return json.loads(data)
        except (UnicodeDecodeError, ValueError) as exc:
            raise SerializationError(f"cannot decode {len(data)} bytes as JSON: {exc}") from exc


class RawSerializer(Serializer):
    """Bytes in, bytes out."""

    name = "raw"

    def dumps(self, value: Any) -> bytes:
        if isinstance(value, (bytes, bytearray, memoryview)):
            return bytes(value)
        raise SerializationError(f"the raw serializer takes bytes, not {type(value).__name__}")

    def loads(self, data: bytes) -> Any:
        return bytes(data)


SERIALIZERS: dict[str, type[Serializer]] = {
    "msgpack": MsgpackSerializer,
    "json": JsonSerializer,
    "raw": RawSerializer,
}


def get_serializer(spec: str | Serializer) -> Serializer:
    """``"msgpack"``, ``"json"``, ``"raw"`` or a :class:`Serializer` instance."""
    if isinstance(spec, Serializer):
        return spec
    try:
        return SERIALIZERS[spec]()
    except (KeyError, TypeError):
        raise InvalidOption("serializer", f"unknown serializer {spec!r}; use {', '.join(SERIALIZERS)}") from None
