"""The postgres provider's writer (akfak/log/pg_writer.py, pg_rows.py) against a real
PostgreSQL: a round's appends to several partitions commit in one transaction, small
batches inline and large ones by COPY, byte for byte; a retry of an append whose commit
landed (its answer lost), even merged with later appends, is recognised and completed; a
different batch at those offsets is a conflict; a fenced partition's append is refused while
the others of its round commit."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import pytest_twisted
from twisted.internet import reactor

from akfak.errors import KafkaStorageError
from akfak.log.pg_rows import COPY_ABOVE
from akfak.log.pg_writer import SCHEMA, Append, BatchRow, Key, PgWriter
from tests.postgres import PostgresServer


@pytest.fixture
def db(postgres: PostgresServer) -> Iterator[tuple[str, Any]]:
    url = postgres.new_schema()
    conn = psycopg.connect(url, autocommit=True)
    conn.execute(SCHEMA)
    yield url, conn
    conn.close()


def writer_for(url: str) -> PgWriter:
    def connect() -> Any:
        return psycopg.connect(url, autocommit=True)

    return PgWriter(connect, connect(), reactor)


def partition(conn: Any, epoch: int = 0) -> Key:
    key = (uuid.uuid4(), 0)
    conn.execute("INSERT INTO akfak_partition (topic_id, partition, topic, leader_epoch) "
                 "VALUES (%s, %s, 't', %s)", (*key, epoch))
    return key


def rows(base: int, *sizes: int) -> list[BatchRow]:
    """One-record batches of random bytes at base, base + 1, ..."""
    return [(base + i, base + i, 1000 + i, 0, -1, os.urandom(size)) for i, size in enumerate(sizes)]


def append(key: Key, batch_rows: list[BatchRow], epoch: int | None = None) -> Append:
    return Append(key, batch_rows[0][0], batch_rows[-1][1] + 1, list(batch_rows), epoch)


def stored(conn: Any, key: Key) -> tuple[int, list[BatchRow]]:
    next_offset = conn.execute("SELECT next_offset FROM akfak_partition WHERE topic_id = %s "
                               "AND partition = %s", key).fetchone()[0]
    found = conn.execute("SELECT base_offset, last_offset, max_timestamp, leader_epoch, "
                         "producer_id, data FROM akfak_batch WHERE topic_id = %s AND "
                         "partition = %s ORDER BY base_offset", key).fetchall()
    return next_offset, [tuple(r) for r in found]


@pytest_twisted.ensureDeferred
async def test_a_round_commits_every_partition_inline_and_by_copy(db: tuple[str, Any]) -> None:
    url, conn = db
    writer = writer_for(url)
    small, large, several = partition(conn), partition(conn), partition(conn)
    wanted = {small: rows(0, 100), large: rows(0, COPY_ABOVE + 1),
              several: rows(0, 10, 20_000, 300)}
    for key, batch_rows in wanted.items():  # one reactor turn: one round
        writer.submit(append(key, batch_rows))
    more = rows(1, 50, 60)
    writer.submit(append(small, more))  # merged with the first append of `small`
    await writer.barrier()
    assert writer.commits == 1
    wanted[small] += more
    for key, batch_rows in wanted.items():
        next_offset, found = stored(conn, key)
        assert next_offset == len(batch_rows)
        assert [r[:5] for r in found] == [r[:5] for r in batch_rows]
        assert [bytes(r[5]) for r in found] == [r[5] for r in batch_rows]
    await writer.close()


@pytest_twisted.ensureDeferred
async def test_a_retry_of_a_commit_whose_answer_was_lost_is_completed(
        db: tuple[str, Any]) -> None:
    url, conn = db
    writer = writer_for(url)
    key = partition(conn)
    first, later = rows(0, 100, COPY_ABOVE), rows(2, 70)
    writer.submit(append(key, first))
    await writer.barrier()
    # The retry: the same append again (committed, its answer lost), merged with the next.
    writer.submit(append(key, first))
    writer.submit(append(key, later))
    await writer.barrier()
    assert writer.failed is None
    next_offset, found = stored(conn, key)
    assert next_offset == 3 and [bytes(r[5]) for r in found] == [r[5] for r in first + later]
    writer.submit(append(key, later))  # all of it committed already: nothing to do
    await writer.barrier()
    assert stored(conn, key) == (next_offset, found)
    await writer.close()


@pytest_twisted.ensureDeferred
async def test_other_batches_at_those_offsets_are_a_conflict(db: tuple[str, Any]) -> None:
    url, conn = db
    writer = writer_for(url)
    key = partition(conn)
    writer.submit(append(key, rows(0, 100, 100)))
    await writer.barrier()
    writer.submit(append(key, rows(0, 100, 100)))  # the same offsets, other bytes
    with pytest.raises(KafkaStorageError, match="next offset is 2"):
        await writer.barrier()
    assert stored(conn, key)[0] == 2
    writer.abandon()


@pytest_twisted.ensureDeferred
async def test_a_fenced_append_is_refused_and_its_round_commits_the_rest(
        db: tuple[str, Any]) -> None:
    url, conn = db
    writer = writer_for(url)
    deposed, led = partition(conn, epoch=5), partition(conn, epoch=5)
    writer.submit(append(deposed, rows(0, 100), epoch=4))
    writer.submit(append(led, rows(0, 100), epoch=5))
    await writer.barrier()
    assert writer.is_fenced(deposed, 4) and not writer.is_fenced(led, 5)
    assert stored(conn, deposed) == (0, [])
    assert stored(conn, led)[0] == 1
    await writer.close()
