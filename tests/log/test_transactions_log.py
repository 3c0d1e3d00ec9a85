"""Transactions in the log, identically for both providers: open transactions bound
the last stable offset, markers close them, aborts are listed for read_committed
fetches (Kafka's ProducerStateManager, LogSegment.txnIndex, collectAbortedTransactions).
"""

from __future__ import annotations

import pytest

from akfak.errors import InvalidProducerEpoch
from akfak.log.partition import PartitionLog
from akfak.log.records import CONTROL_ABORT, CONTROL_COMMIT, read_marker
from akfak.log.txn_index import AbortedTxn
from tests.log.conftest import T0, StorageFactory
from tests.log.test_producer_state import append, batch, new_log
from tests.recordbatch import parse_batches


def marker(log: PartitionLog, pid: int, epoch: int, *, commit: bool, coordinator_epoch: int = 3
           ) -> int:
    info = log.append_marker(producer_id=pid, producer_epoch=epoch, commit=commit,
                             coordinator_epoch=coordinator_epoch, leader_epoch=0, now_ms=T0)
    return int(info.base_offset)


def test_open_transactions_hold_back_the_last_stable_offset(open_storage: StorageFactory) -> None:
    log = new_log(open_storage())
    append(log, batch(1, 0, 0))                       # 0: idempotent, not transactional
    assert log.last_stable_offset == log.high_watermark == 1
    append(log, batch(2, 0, 0, 2, transactional=True))  # 1-2: transaction of producer 2
    append(log, batch(3, 0, 0, transactional=True))     # 3: transaction of producer 3
    assert (log.last_stable_offset, log.high_watermark) == (1, 4)
    assert marker(log, 2, 0, commit=True) == 4          # 4: COMMIT of producer 2
    assert (log.last_stable_offset, log.high_watermark) == (3, 5)
    assert marker(log, 3, 0, commit=False) == 5         # 5: ABORT of producer 3
    assert log.last_stable_offset == log.high_watermark == 6
    # Only the abort is listed, with the LSO once it completed.
    assert log.collect_aborted(0, 6) == [AbortedTxn(3, 3, 5, 6)]
    assert log.collect_aborted(4, 6) == [AbortedTxn(3, 3, 5, 6)]
    assert log.collect_aborted(0, 3) == []  # the range ends before the transaction began


def test_markers_are_control_batches_in_kafkas_format(open_storage: StorageFactory) -> None:
    log = new_log(open_storage())
    append(log, batch(9, 4, 0, transactional=True))
    marker(log, 9, 4, commit=True, coordinator_epoch=7)
    append(log, batch(9, 4, 1, transactional=True))
    marker(log, 9, 4, commit=False, coordinator_epoch=7)
    stored = log.read(0, 1 << 20)
    data = b"".join(stored.parts)
    from akfak.log.batch import scan
    kinds = []
    for pos, header in scan(data):
        if header.is_control:
            assert header.is_transactional and header.producer_id == 9
            assert header.producer_epoch == 4 and header.base_sequence == -1
            kinds.append(read_marker(data[pos : pos + header.size]))
    assert kinds == [(CONTROL_COMMIT, 7), (CONTROL_ABORT, 7)]
    entry = log.producer_state.last_entry(9)
    assert entry.coordinator_epoch == 7 and entry.current_txn_first_offset is None
    assert [r.value for r in parse_batches(stored.parts) if r.control is False] == [b"r-0", b"r-0"]


def test_a_marker_with_an_older_epoch_is_refused(open_storage: StorageFactory) -> None:
    log = new_log(open_storage())
    append(log, batch(5, 3, 0, transactional=True))
    with pytest.raises(InvalidProducerEpoch):
        marker(log, 5, 2, commit=False)
    # A bumped epoch (the coordinator fencing the producer) ends the transaction.
    marker(log, 5, 4, commit=False)
    assert log.last_stable_offset == 2 and log.collect_aborted(0, 2) == [AbortedTxn(5, 0, 1, 2)]
    with pytest.raises(InvalidProducerEpoch):
        append(log, batch(5, 3, 1, transactional=True))


def test_read_committed_reads_stop_at_the_last_stable_offset(open_storage: StorageFactory) -> None:
    log = new_log(open_storage())
    append(log, batch(1, 0, 0, 3))
    append(log, batch(2, 0, 0, 2, transactional=True))
    read = log.read(0, 1 << 20, max_offset=log.last_stable_offset)
    assert read.next_offset == 3 and read.last_stable_offset == 3
    assert len(parse_batches(read.parts)) == 3
