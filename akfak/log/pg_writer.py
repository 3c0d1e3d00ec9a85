"""The PostgreSQL side of the postgres provider: the schema, and the writer that commits
the logs' changes on a thread, in order, grouped into transactions.

The partition logs run on the reactor (see postgres.py); each change they make (an append,
retention, a compaction swap, a topic deletion) becomes an `Op` handed to the `PgWriter`.
Every op submitted during one reactor turn, and every op submitted while a commit is in
flight, goes into the next PostgreSQL transaction, in submission order: group commit, one
round of commits per turn however many partitions were written.  So the COMMIT or ABORT
markers of a transaction, written in one turn to every partition it touched, commit in one
PostgreSQL transaction.

`barrier()` fires once everything submitted so far is committed: that is what Produce
waits for before it answers (acknowledged = committed in PostgreSQL).

When PostgreSQL is unreachable the writer keeps the ops and tries again (a reconnect every
second); acknowledgements wait meanwhile.  A commit whose answer was lost is recognised on
the retry: an append's offsets are checked against the partition row (`Append.run`).
Anything else failing is a bug or a second writer: the writer stops, and every waiting and
later append fails with KAFKA_STORAGE_ERROR until a restart.

A round's appends (each partition's merged) go in one statement that checks and moves every
partition's next offset and inserts the batches (pg_rows.py: binary, by COPY when large).
If some partition did not move, the round rolls back and runs again op by op, where each
append finds out why (`Append.run`).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorThreads
from twisted.logger import Logger
from twisted.python.failure import Failure

from akfak.errors import KafkaStorageError
from akfak.log.pg_rows import MAX_STATEMENT_PARTITIONS, append_all, insert_rows, one_statement
from akfak.log.threads import JobThread

log = Logger()

#: The tables.  One row per partition (no row shared by all partitions: appends to
#: different partitions never touch the same row), one row per stored batch.
SCHEMA = """
CREATE TABLE IF NOT EXISTS akfak_cluster (
    name text PRIMARY KEY,
    value text NOT NULL
);
CREATE TABLE IF NOT EXISTS akfak_partition (
    topic_id uuid NOT NULL,
    partition integer NOT NULL,
    topic text NOT NULL,
    log_start_offset bigint NOT NULL DEFAULT 0,
    next_offset bigint NOT NULL DEFAULT 0,
    leader_epochs text NOT NULL DEFAULT '',
    PRIMARY KEY (topic_id, partition)
);
CREATE TABLE IF NOT EXISTS akfak_batch (
    topic_id uuid NOT NULL,
    partition integer NOT NULL,
    base_offset bigint NOT NULL,
    last_offset bigint NOT NULL,
    max_timestamp bigint NOT NULL,
    leader_epoch integer NOT NULL,
    producer_id bigint NOT NULL,
    data bytea NOT NULL,
    PRIMARY KEY (topic_id, partition, base_offset),
    FOREIGN KEY (topic_id, partition) REFERENCES akfak_partition ON DELETE CASCADE
);
-- batches are mostly compressed already: no TOAST compression attempt
ALTER TABLE akfak_batch ALTER COLUMN data SET STORAGE EXTERNAL;
-- the cluster (akfak/cluster.py): the leader and its epoch, which every append checks
ALTER TABLE akfak_partition ADD COLUMN IF NOT EXISTS leader integer NOT NULL DEFAULT -1;
ALTER TABLE akfak_partition ADD COLUMN IF NOT EXISTS leader_epoch integer NOT NULL DEFAULT 0;
-- one row per broker that ever registered; live while lease_until > now() (the database's clock)
CREATE TABLE IF NOT EXISTS akfak_broker (
    node_id integer PRIMARY KEY,
    incarnation uuid NOT NULL,
    endpoints text NOT NULL DEFAULT '[]',
    rack text,
    lease_until timestamptz NOT NULL
);
"""

#: (topic id, partition): a partition's key in every table.
Key = tuple[uuid.UUID, int]
#: An akfak_batch row without its key: base, last, max timestamp, leader epoch, producer id, data.
BatchRow = tuple[int, int, int, int, int, bytes]

class StorageConflict(Exception):
    """The database does not hold what this broker's log expects (another writer?)."""


class Fenced(Exception):
    """An op of a leader epoch the partition row has moved past: a newer leader has it."""

    def __init__(self, key: Key, epoch: int) -> None:
        super().__init__(f"{key[0]}-{key[1]}: leader epoch {epoch} is fenced")
        self.key, self.epoch = key, epoch


def check_epoch(cursor: Any, key: Key, epoch: int) -> None:
    """Raise Fenced unless the partition row (locked until the commit) has `epoch`."""
    cursor.execute("SELECT leader_epoch FROM akfak_partition WHERE topic_id = %s AND "
                   "partition = %s FOR UPDATE", key)
    row = cursor.fetchone()
    if row is None or row[0] != epoch:
        raise Fenced(key, epoch)


class Op:
    """One change to commit; `run` executes it with a cursor, on the writer's thread.
    Subclasses have `key`: the partition it changes (None: none or several), and `epoch`:
    the leader epoch it was made under (None: not fenced)."""

    key: Key | None
    epoch: int | None

    def run(self, cursor: Any) -> None:
        raise NotImplementedError


@dataclass
class Append(Op):
    """Batches at [base, end) of a partition: the offsets are taken in the same statement
    that checks them (next_offset must be `base`), so two writers can never both append
    at one offset; in a cluster the leader epoch is in that condition too (fencing: a
    deposed leader's append is refused, however late it comes).  Usually committed with the
    round's other appends (`append_all`); `run` is the careful way, one append at a time."""

    key: Key
    base: int
    end: int
    rows: list[BatchRow] = field(default_factory=list)
    epoch: int | None = None

    def run(self, cursor: Any) -> None:
        rows = self.rows
        if not self._move(cursor, self.base):
            cursor.execute("SELECT next_offset, leader_epoch FROM akfak_partition "
                           "WHERE topic_id = %s AND partition = %s", self.key)
            row = cursor.fetchone()
            # A retry of an attempt whose answer was lost (merged with later appends, maybe):
            # the batches below the database's next offset are these very ones.
            stored = self._stored(cursor, row[0]) if row is not None else None
            if stored == len(rows):
                return
            if stored is None or not self._move(cursor, row[0]):
                if self.epoch is not None and (row is None or row[1] != self.epoch):
                    raise Fenced(self.key, self.epoch)
                raise StorageConflict(
                    f"append at {self.base} to {self.key[0]}-{self.key[1]}: the database's "
                    f"next offset is {row[0] if row else None}")
            rows = rows[stored:]
        insert_rows(cursor, self.key, rows)

    def _move(self, cursor: Any, base: int) -> bool:
        fence = "" if self.epoch is None else " AND leader_epoch = %s"
        cursor.execute("UPDATE akfak_partition SET next_offset = %s "
                       "WHERE topic_id = %s AND partition = %s AND next_offset = %s" + fence,
                       (self.end, *self.key, base, *(() if self.epoch is None else (self.epoch,))))
        return cursor.rowcount == 1

    def _stored(self, cursor: Any, next_offset: int) -> int | None:
        """How many of the rows are stored already, if those below `next_offset` are (the
        first and last of them compared), else None."""
        done = [row for row in self.rows if row[0] < next_offset]
        boundary = self.rows[len(done)][0] if len(done) < len(self.rows) else self.end
        if not done or boundary != next_offset:
            return None
        for row in {0: done[0], len(done) - 1: done[-1]}.values():
            cursor.execute("SELECT data = %b FROM akfak_batch WHERE topic_id = %s AND "
                           "partition = %s AND base_offset = %s", (row[5], *self.key, row[0]))
            same = cursor.fetchone()
            if not same or not same[0]:
                return None
        return len(done)

    def extend(self, other: Append) -> bool:
        """Merge a following append to the same partition (one UPDATE for both)."""
        if other.key != self.key or other.base != self.end or other.epoch != self.epoch:
            return False
        self.end = other.end
        self.rows.extend(other.rows)
        return True


@dataclass
class Statement(Op):
    """Plain statements (idempotent, so that a retry is harmless); with an `epoch`, run only
    while the partition row has it (else Fenced)."""

    key: Key | None
    statements: Sequence[tuple[str, tuple[Any, ...]]]
    #: Rows for INSERT INTO akfak_batch after the statements (a compaction's cleaned batches).
    rows: Sequence[BatchRow] = ()
    epoch: int | None = None

    def run(self, cursor: Any) -> None:
        if self.epoch is not None and self.key is not None:
            check_epoch(cursor, self.key, self.epoch)
        for sql, params in self.statements:
            cursor.execute(sql, params)
        if self.rows and self.key is not None:
            insert_rows(cursor, self.key, self.rows)


class _Recheck(Exception):
    """Some append of a round's statement did not move its partition (`append_all`)."""


def _run(cursor: Any, ops: Sequence[Op], *, together: bool) -> None:
    """Run the ops in order; `together`: consecutive appends to distinct partitions in one
    statement each (raises _Recheck if one of them did not apply)."""
    group: list[Append] = []
    keys: set[Key] = set()

    def flush() -> None:
        if group and not append_all(cursor, group):
            raise _Recheck
        group.clear()
        keys.clear()

    for op in ops:
        if together and isinstance(op, Append):
            if op.key in keys or len(group) >= MAX_STATEMENT_PARTITIONS:
                flush()
            group.append(op)
            keys.add(op.key)
            continue
        flush()  # in order: what came before this op is applied before it
        op.run(cursor)
    flush()


def _coalesce(ops: Sequence[Op]) -> list[Op]:
    """Merge each partition's consecutive appends (other partitions' ops may come between:
    different keys are independent)."""
    out: list[Op] = []
    open_append: dict[Key, Append] = {}
    for op in ops:
        if isinstance(op, Append):
            current = open_append.get(op.key)
            if current is not None and current.extend(op):
                continue
            merged = Append(op.key, op.base, op.end, list(op.rows), op.epoch)
            open_append[op.key] = merged
            out.append(merged)
            continue
        key = getattr(op, "key", None)
        if key is None:
            open_append.clear()
        else:
            open_append.pop(key, None)
        out.append(op)
    return out


class PgWriter:
    """Commits submitted ops in order, on a thread, one transaction per round."""

    def __init__(self, connect: Callable[[], Any], conn: Any, clock: Any,
                 retry_delay: float = 1.0) -> None:
        self._connect = connect
        self._conn = conn
        if not IReactorThreads.providedBy(clock):  # a test's Clock: the commits still run
            from twisted.internet import reactor as clock
        self._clock = clock
        #: where the commits run, one after another
        self._thread = JobThread(clock, "akfak-postgres-writer")
        self.retry_delay = retry_delay
        self._pending: list[Op] = []
        self._submitted = 0
        self._committed = 0
        self._waiters: list[tuple[int, Deferred[None]]] = []
        #: (target, fn): run once the ops up to target are committed, before the waiters
        self._after: list[tuple[int, Callable[[], None]]] = []
        self._busy = False
        self._scheduled: Any = None
        self._unavailable: str | None = None
        #: Why the writer stopped for good (None: it runs).
        self.failed: str | None = None
        self.closed = False
        #: Commits done (for the logs and the benchmark).
        self.commits = 0
        #: (partition, leader epoch) whose ops are refused: a newer leader has the partition.
        #: Their ops are skipped from then on (their logs raise NotLeaderOrFollower).
        self.fenced: set[tuple[Key, int]] = set()
        #: on_commit(topic, partition): a partition's high watermark rose (the broker wakes
        #: the fetches waiting for it)
        self.on_commit: Callable[[str, int], None] | None = None

    # -- reactor side ----------------------------------------------------------------------

    def submit(self, op: Op) -> None:
        if self.failed is not None or self.closed:
            return
        self._pending.append(op)
        self._submitted += 1
        if not self._busy and self._scheduled is None:
            self._scheduled = self._clock.callLater(0, self._start)

    def barrier(self) -> Deferred[None]:
        """Fires once every op submitted so far is committed; fails (KafkaStorageError)
        if the writer stopped."""
        if self.failed is not None:
            return _failed(self.failed)
        if self._committed >= self._submitted:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._waiters.append((self._submitted, waiter))
        return waiter

    def after_commit(self, fn: Callable[[], None]) -> None:
        """Runs `fn` once every op submitted so far is committed, before the waiters of
        `barrier()` are told (a log's bookkeeping: its high watermark moves first)."""
        if self.failed is None and self._committed < self._submitted:
            self._after.append((self._submitted, fn))

    def _start(self) -> None:
        self._scheduled = None
        if self._busy or not self._pending or self.failed is not None:
            return
        ops, self._pending = self._pending, []
        self._busy = True
        self._thread.run(self._commit, _coalesce(ops), frozenset(self.fenced)
                         ).addBoth(self._done, ops)

    def _done(self, result: Any, ops: list[Op]) -> None:
        self._busy = False
        if isinstance(result, Failure):
            if isinstance(result.value, Fenced) and not self.closed:
                # The transaction rolled back: again without that partition's ops.
                fenced = result.value
                log.info("{error}: its writes are refused", error=str(fenced))
                self.fenced.add((fenced.key, fenced.epoch))
                self._pending[:0] = ops
                self._scheduled = self._clock.callLater(0, self._start)
                return
            if _is_connection_error(result.value) and not self.closed:
                if self._unavailable is None:
                    self._unavailable = result.getErrorMessage().strip()
                    log.error("PostgreSQL is unavailable ({e}); appends wait for it and are "
                              "acknowledged once committed", e=self._unavailable)
                self._pending[:0] = ops
                self._scheduled = self._clock.callLater(self.retry_delay, self._start)
                return
            self._fail(result)
            return
        if self._unavailable is not None:
            log.info("PostgreSQL is available again; committing the waiting appends")
            self._unavailable = None
        self.commits += 1
        self._committed += len(ops)
        committed = self._committed
        after, self._after = self._after, [(t, fn) for t, fn in self._after if t > committed]
        for target, fn in after:
            if target <= committed:
                try:
                    fn()
                except Exception:
                    log.failure("After a commit")
        ready = [w for target, w in self._waiters if target <= committed]
        self._waiters = [(t, w) for t, w in self._waiters if t > committed]
        for waiter in ready:
            waiter.callback(None)
        if self._pending and self._scheduled is None:
            self._scheduled = self._clock.callLater(0, self._start)

    def _fail(self, failure: Failure) -> None:
        self.failed = f"writing to PostgreSQL failed: {failure.getErrorMessage()}"
        log.failure("Writing to PostgreSQL failed; appends answer KAFKA_STORAGE_ERROR until "
                    "a restart", failure)
        self._pending.clear()
        self._after.clear()
        waiters, self._waiters = self._waiters, []
        for _, waiter in waiters:
            waiter.errback(KafkaStorageError(self.failed))

    # -- the writer's thread ----------------------------------------------------------------

    def is_fenced(self, key: Key, epoch: int | None) -> bool:
        return epoch is not None and (key, epoch) in self.fenced

    def _commit(self, ops: Sequence[Op], fenced: frozenset[tuple[Key, int]]) -> None:
        if self._conn is None or self._conn.closed:
            self._conn = self._connect()
        conn = self._conn
        live = [op for op in ops if op.epoch is None or (op.key, op.epoch) not in fenced]
        try:
            if one_statement(live):
                # No BEGIN and COMMIT: two round trips fewer.  If some partition did not
                # move, the others' appends are committed: the careful way below finds
                # their rows stored, as after a lost answer.
                with conn.cursor() as cursor:
                    if append_all(cursor, live):  # type: ignore[arg-type]
                        return
            else:
                try:
                    with conn.transaction(), conn.cursor() as cursor:
                        _run(cursor, live, together=True)
                    return
                except _Recheck:  # rolled back
                    pass
            # Once more, each append on its own.
            with conn.transaction(), conn.cursor() as cursor:
                _run(cursor, live, together=False)
        except Exception as e:
            # A connection cut mid-statement (a PostgreSQL restart) may not say it is broken
            # but refuses every later query: start again on a new one.
            if conn.broken or conn.closed or not isinstance(e, Fenced | StorageConflict):
                self._conn = None
                with contextlib.suppress(Exception):
                    conn.close()
            raise

    # -- closing -------------------------------------------------------------------------------

    def close(self) -> Deferred[None]:
        """Commit what is pending, then close the connection."""
        def close(_: Any) -> Deferred[None]:
            self.closed = True
            closed = self._thread.run(self._close_conn)
            self._thread.stop()
            return closed

        return self.barrier().addBoth(close)

    def abandon(self) -> None:
        """Stop now, committing nothing more (what a kill -9 leaves)."""
        self.closed = True
        self._pending.clear()
        if self._scheduled is not None and self._scheduled.active():
            self._scheduled.cancel()
        self._scheduled = None
        if not self._busy:
            self._close_conn()
        self._thread.stop()  # after the commit in flight, if any

    def _close_conn(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _failed(reason: str) -> Deferred[None]:
    d: Deferred[None] = Deferred()
    d.errback(KafkaStorageError(reason))
    return d


def _is_connection_error(error: BaseException) -> bool:
    import psycopg

    return isinstance(error, psycopg.OperationalError)
