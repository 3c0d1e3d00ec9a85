"""The classic and flexible encodings of coordinator records (keys and values of
`__consumer_offsets` and `__transaction_state`, as Kafka's generated message classes
write them)."""

from __future__ import annotations

import struct

_I8 = struct.Struct(">b")
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")


def uvarint(value: int) -> bytes:
    """Kafka's unsigned varint (compact lengths, tagged-field counts)."""
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


class RecordFormatError(ValueError):
    """Bytes that are not a coordinator record akfak understands."""


class Writer:
    """Classic (non-flexible) Kafka encoding."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def int16(self, v: int) -> None:
        self.parts.append(_I16.pack(v))

    def int32(self, v: int) -> None:
        self.parts.append(_I32.pack(v))

    def int64(self, v: int) -> None:
        self.parts.append(_I64.pack(v))

    def string(self, v: str | None) -> None:
        if v is None:
            self.int16(-1)
            return
        data = v.encode("utf-8")
        self.int16(len(data))
        self.parts.append(data)

    def bytes_(self, v: bytes) -> None:
        self.int32(len(v))
        self.parts.append(v)

    def getvalue(self) -> bytes:
        return b"".join(self.parts)


class Reader:
    """Reads classic and flexible (compact, tagged) encodings."""

    def __init__(self, data: bytes, flexible: bool = False):
        self.data = data
        self.pos = 0
        self.flexible = flexible

    def _take(self, n: int) -> bytes:
        end = self.pos + n
        if n < 0 or end > len(self.data):
            raise RecordFormatError("record runs past its end")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def int16(self) -> int:
        (v,) = _I16.unpack(self._take(2))
        return int(v)

    def int32(self) -> int:
        (v,) = _I32.unpack(self._take(4))
        return int(v)

    def int64(self) -> int:
        (v,) = _I64.unpack(self._take(8))
        return int(v)

    def uvarint(self) -> int:
        result = shift = 0
        while True:
            byte = self._take(1)[0]
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result
            shift += 7
            if shift > 63:
                raise RecordFormatError("varint too long")

    def nullable_string(self) -> str | None:
        n = self.uvarint() - 1 if self.flexible else self.int16()
        if n < 0:
            return None
        try:
            return self._take(n).decode("utf-8")
        except UnicodeDecodeError:
            raise RecordFormatError("string is not UTF-8") from None

    def string(self) -> str:
        value = self.nullable_string()
        if value is None:
            raise RecordFormatError("null where a string is required")
        return value

    def bytes_(self) -> bytes:
        n = self.uvarint() - 1 if self.flexible else self.int32()
        if n < 0:
            return b""
        return self._take(n)

    def array_length(self) -> int:
        n = self.uvarint() - 1 if self.flexible else self.int32()
        return max(n, 0)

    def tagged_fields(self) -> None:
        if not self.flexible:
            return
        for _ in range(self.uvarint()):
            self.uvarint()  # tag
            self._take(self.uvarint())

    def int8(self) -> int:
        (v,) = _I8.unpack(self._take(1))
        return int(v)

    def at_end(self) -> bool:
        return self.pos >= len(self.data)
