"""The akfak_batch rows as the writer sends them (pg_writer.py), with as few statements,
parameters and copies of the bytes as it can: an append's CPU is mostly its bytes, and with
many partitions psycopg's cost per parameter.

- A round's appends go in one statement (`append_all`): a CTE moving every partition's
  next offset under the offset and epoch check (the partitions as text arrays, so the
  statement's text is the same whatever their number), inserting the batches of the
  partitions that moved, counting them.
- Batches are binary parameters: a batch goes as it is, not hex-escaped (which doubles it).
- Past 32 batches or 256 KiB they go by `COPY ... (FORMAT BINARY)` instead, written by
  hand: each row's fixed fields packed at once, small rows gathered into 128 KiB buffers, a
  large batch's data handed over as a view (psycopg passes it to libpq in 128 KiB pieces).
  One large statement would cost more than its size: libpq moves the unsent rest of its
  output buffer to the front after every partial send, so a message of n bytes costs about
  n²/(socket buffer) bytes of memmove."""

from __future__ import annotations

import functools
import struct
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from akfak.log.segment import Buffer

if TYPE_CHECKING:
    from akfak.log.pg_writer import Append, BatchRow, Key

COLUMNS = ("topic_id, partition, base_offset, last_offset, max_timestamp, leader_epoch, "
           "producer_id, data")
#: One akfak_batch row's parameters.
_ROW = "(%b::uuid, %b::int4, %b::int8, %b::int8, %b::int8, %b::int4, %b::int8, %b::bytea)"
#: At most so many partitions in one statement.
MAX_STATEMENT_PARTITIONS = 2000
#: More batches, or bytes, than this (together) go by COPY: a statement's parameters cost
#: more per batch than COPY's packing, and a large message more than its size.
INLINE_ROWS = 32
COPY_ABOVE = 1 << 20

_COPY = f"COPY akfak_batch ({COLUMNS}) FROM STDIN (FORMAT BINARY)"
#: The binary COPY header: signature, flags, no extension.
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
_COPY_TRAILER = b"\xff\xff"
#: A row's field count and every field but the data (each a length, then the value), then
#: the data's length.
_COPY_FIELDS = struct.Struct("!hi16sii" + "iq" * 3 + "ii" + "iq" + "i")
#: Hand libpq this much before waiting for it to be sent: its output buffer stays small.
#: Not above psycopg's MAX_BUFFER_SIZE (128 KiB), which it would cut into copies.
_FLUSH_EVERY = 120 << 10


def _inline(rows: int, size: int) -> bool:
    return rows <= INLINE_ROWS and size <= COPY_ABOVE


@functools.lru_cache(maxsize=1 << 16)
def _uuid_text(topic_id: uuid.UUID) -> str:
    return str(topic_id)


def _array(values: Any) -> str:
    """A text array parameter (`%s::int8[]`): one join, not one parameter per value."""
    return "{" + ",".join(values) + "}"


def one_statement(ops: Sequence[object]) -> bool:
    """Whether `append_all` commits these ops in one statement: appends only, to distinct
    partitions, their batches inline (a single statement is a transaction of its own)."""
    from akfak.log.pg_writer import Append

    if not ops or len(ops) > MAX_STATEMENT_PARTITIONS:
        return False
    keys = set()
    count = size = 0
    for op in ops:
        if not isinstance(op, Append) or op.key in keys:
            return False
        keys.add(op.key)
        count += len(op.rows)
        size += sum(len(row[5]) for row in op.rows)
    return _inline(count, size)


def append_all(cursor: Any, appends: Sequence[Append]) -> bool:
    """Appends to distinct partitions: each partition row whose next offset is the append's
    base (and leader epoch its epoch) moves to its end, and the batches of those partitions
    are inserted.  Returns whether every partition moved; if not, the caller rolls back
    (some append needs a closer look)."""
    rows = [(a.key, row) for a in appends for row in a.rows]
    inline = _inline(len(rows), sum(len(row[5]) for _, row in rows))
    params: list[Any] = [
        _array([_uuid_text(a.key[0]) for a in appends]),
        _array([str(a.key[1]) for a in appends]),
        _array([str(a.base) for a in appends]),
        _array([str(a.end) for a in appends]),
        _array([str(-1 if a.epoch is None else a.epoch) for a in appends])]
    insert = ""
    if inline:
        for key, row in rows:
            params += (*key, *row)
        insert = (f", b ({COLUMNS}) AS (VALUES {', '.join([_ROW] * len(rows))}), "
                  f"i AS (INSERT INTO akfak_batch ({COLUMNS}) SELECT b.* FROM b "
                  "JOIN u USING (topic_id, partition))")
    cursor.execute(
        "WITH p AS (SELECT * FROM unnest(%s::uuid[], %s::int4[], %s::int8[], %s::int8[], "
        "%s::int4[]) AS p (topic_id, partition, base, next, epoch)), "
        "u AS (UPDATE akfak_partition t SET next_offset = p.next FROM p "
        "WHERE t.topic_id = p.topic_id AND t.partition = p.partition AND t.next_offset = p.base "
        "AND (p.epoch < 0 OR t.leader_epoch = p.epoch) RETURNING t.topic_id, t.partition)"
        f"{insert} SELECT count(*) FROM u", params)
    moved = cursor.fetchone()
    if moved is None or moved[0] != len(appends):
        return False
    if not inline:
        _copy(cursor, rows)
    return True


def insert_rows(cursor: Any, key: Key, rows: Sequence[BatchRow]) -> None:
    """INSERT one partition's batch rows."""
    if not _inline(len(rows), sum(len(row[5]) for row in rows)):
        _copy(cursor, [(key, row) for row in rows])
    elif rows:
        cursor.execute(f"INSERT INTO akfak_batch ({COLUMNS}) VALUES "
                       + ", ".join([_ROW] * len(rows)), [v for row in rows for v in (*key, *row)])


def _copy(cursor: Any, rows: Sequence[tuple[Key, BatchRow]]) -> None:
    """The rows by binary COPY: small ones joined into chunks of about _FLUSH_EVERY bytes
    (each write to psycopg costs a round of its machinery; one join, not a bytearray
    grown row by row, which realloc copies again and again), large data handed over as a
    view of itself."""
    from psycopg.copy import LibpqWriter

    pack = _COPY_FIELDS.pack
    with cursor.copy(_COPY, writer=LibpqWriter(cursor, flush_threshold=_FLUSH_EVERY)) as copy:
        parts: list[Buffer] = [_COPY_HEADER]
        size = len(_COPY_HEADER)
        for (topic_id, partition), (base, last, max_ts, epoch, producer_id, data) in rows:
            fields = pack(8, 16, topic_id.bytes, 4, partition, 8, base, 8, last, 8, max_ts,
                          4, epoch, 8, producer_id, len(data))
            if size + len(fields) + len(data) > _FLUSH_EVERY:
                if parts:
                    copy.write(b"".join(parts))
                parts, size = [], 0
                if len(data) >= _FLUSH_EVERY:
                    copy.write(fields)
                    copy.write(memoryview(data))
                    continue
            parts += (fields, data)
            size += len(fields) + len(data)
        parts.append(_COPY_TRAILER)
        copy.write(b"".join(parts))
