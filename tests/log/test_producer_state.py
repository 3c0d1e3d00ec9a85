"""Idempotent-producer state, run identically against the memory and the disk provider.

Batches come from tests/recordbatch.py; the expectations are Kafka's
(ProducerStateManager / ProducerAppendInfo): duplicates of the last five batches
answer the original offsets, gaps are OUT_OF_ORDER_SEQUENCE_NUMBER, older epochs
INVALID_PRODUCER_EPOCH, a new epoch restarts at sequence 0, sequences wrap at 2^31-1.
"""

from __future__ import annotations

import uuid

import pytest

from akfak.errors import InvalidProducerEpoch, OutOfOrderSequenceNumber
from akfak.log.config import LogConfig
from akfak.log.partition import ORIGIN_COORDINATOR, PartitionLog
from akfak.log.producer_state import InvalidTxnState
from akfak.log.storage import BaseLogStorage
from tests.log.conftest import T0, StorageFactory
from tests.recordbatch import make_batch, parse_batches

INT32_MAX = 2**31 - 1


def new_log(storage: BaseLogStorage, topic: str = "t", **topic_configs: object) -> PartitionLog:
    overrides = {k.replace("_", "."): str(v) for k, v in topic_configs.items()}
    return storage.create_log(topic, 0, uuid.uuid4(), LogConfig.from_broker(storage.config, overrides))


def batch(pid: int, epoch: int, seq: int, count: int = 1, *, ts: int = T0, tag: bytes = b"r",
          **kwargs: object) -> bytes:
    """`count` records from producer `pid` starting at sequence `seq`."""
    return make_batch([(None, b"%s-%d" % (tag, i), None, ts) for i in range(count)],
                      producer_id=pid, producer_epoch=epoch, base_sequence=seq, timestamp=ts,
                      **kwargs)  # type: ignore[arg-type]


def append(log: PartitionLog, data: bytes, now: int = T0, **kwargs: object) -> int:
    return int(log.append(data, leader_epoch=0, now_ms=now, **kwargs).base_offset)  # type: ignore[arg-type]


def stored_values(log: PartitionLog) -> list[bytes | None]:
    return [r.value for r in parse_batches(log.read(log.log_start_offset, 1 << 24).parts)]


def test_a_retried_batch_answers_its_first_offsets_and_is_not_stored_again(
        open_storage: StorageFactory) -> None:
    log = new_log(open_storage())
    append(log, make_batch([b"plain"], timestamp=T0))  # offset 0, no producer id
    first = batch(7, 0, 0, 3, ts=T0 + 5)
    info = log.append(first, leader_epoch=0, now_ms=T0 + 10)
    assert (info.base_offset, info.last_offset) == (1, 3)
    again = log.append(first, leader_epoch=0, now_ms=T0 + 20)
    # Kafka's answer for a duplicate: the original offsets, the batch's timestamp as the
    # append time, the current log start offset; nothing written.
    assert (again.base_offset, again.last_offset) == (1, 3)
    assert again.log_append_time == T0 + 5 and again.log_start_offset == 0
    assert log.log_end_offset == 4
    assert stored_values(log) == [b"plain", b"r-0", b"r-1", b"r-2"]


def test_each_of_the_last_five_batches_is_recognised_but_not_the_sixth(
        open_storage: StorageFactory) -> None:
    log = new_log(open_storage())
    sent = [batch(3, 1, 2 * i, 2, tag=b"b%d" % i) for i in range(7)]
    bases = [append(log, data) for data in sent]
    assert bases == [0, 2, 4, 6, 8, 10, 12]
    for i in range(2, 7):
        assert append(log, sent[i]) == bases[i]
    assert log.log_end_offset == 14
    # Batch 1 left the window: it is neither a duplicate nor in sequence.
    with pytest.raises(OutOfOrderSequenceNumber, match=r"2 \(incoming seq\. number\), 13"):
        append(log, sent[1])
    assert log.log_end_offset == 14


def test_a_sequence_gap_is_out_of_order_and_appends_nothing(open_storage: StorageFactory) -> None:
    log = new_log(open_storage())
    append(log, batch(9, 0, 0, 2))
    with pytest.raises(OutOfOrderSequenceNumber) as raised:
        append(log, batch(9, 0, 3))
    assert raised.value.error_code == 45
    assert str(raised.value) == (
        "Out of order sequence number for producer 9 at offset 2 in partition t-0: "
        "3 (incoming seq. number), 1 (current end sequence number)")
    with pytest.raises(OutOfOrderSequenceNumber):
        append(log, batch(9, 0, 1))  # overlapping, but not a batch that was sent
    assert log.log_end_offset == 2
    assert append(log, batch(9, 0, 2)) == 2


def test_an_older_epoch_is_refused(open_storage: StorageFactory) -> None:
    log = new_log(open_storage())
    append(log, batch(5, 3, 0))
    with pytest.raises(InvalidProducerEpoch) as raised:
        append(log, batch(5, 2, 1))
    assert raised.value.error_code == 47
    assert "is 2, which is smaller than the last seen epoch 3" in str(raised.value)
    assert log.log_end_offset == 1


def test_a_new_epoch_starts_at_sequence_zero(open_storage: StorageFactory) -> None:
    log = new_log(open_storage())
    append(log, batch(5, 0, 0, 4))
    with pytest.raises(OutOfOrderSequenceNumber, match="Invalid sequence number for new epoch"):
        append(log, batch(5, 1, 4))
    assert append(log, batch(5, 1, 0, 2)) == 4
    with pytest.raises(InvalidProducerEpoch):
        append(log, batch(5, 0, 4))  # the old epoch is fenced now
    assert append(log, batch(5, 1, 0, 2)) == 4  # the new epoch's batch is the duplicate
    assert append(log, batch(5, 1, 2)) == 6


def test_sequences_wrap_after_int32_max(open_storage: StorageFactory) -> None:
    log = new_log(open_storage())
    append(log, batch(1, 0, INT32_MAX - 2, 2))  # sequences 2^31-3 .. 2^31-2
    spanning = batch(1, 0, INT32_MAX, 3)  # 2^31-1, 0, 1
    assert append(log, spanning) == 2
    assert append(log, spanning) == 2  # its duplicate is found across the wrap
    with pytest.raises(OutOfOrderSequenceNumber):
        append(log, batch(1, 0, 0))
    assert append(log, batch(1, 0, 2)) == 5
    append(log, batch(2, 0, INT32_MAX - 1, 2))  # ends exactly at 2^31-1
    assert append(log, batch(2, 0, 0)) == 8


def test_an_unknown_producer_may_start_at_any_sequence(open_storage: StorageFactory) -> None:
    log = new_log(open_storage())
    assert append(log, batch(77, 4, 1234, 2)) == 0
    assert append(log, batch(77, 4, 1236)) == 2
    with pytest.raises(OutOfOrderSequenceNumber):
        append(log, batch(77, 4, 1238))


def test_producers_are_independent_and_plain_batches_are_untouched(
        open_storage: StorageFactory) -> None:
    log = new_log(open_storage())
    plain = make_batch([b"x"], timestamp=T0)
    assert [append(log, plain) for _ in range(3)] == [0, 1, 2]  # no producer id: no dedup
    assert append(log, batch(1, 0, 0)) == 3
    assert append(log, batch(2, 0, 0)) == 4
    assert append(log, batch(1, 0, 0)) == 3
    assert append(log, batch(2, 0, 1)) == 5


def test_batches_of_one_append_are_checked_in_order(open_storage: StorageFactory) -> None:
    # Produce requests carry one batch per partition; internal appends may carry several.
    log = new_log(open_storage())
    info = log.append(batch(4, 0, 0, 2) + batch(4, 0, 2, 2), leader_epoch=0, now_ms=T0)
    assert (info.base_offset, info.last_offset) == (0, 3)
    with pytest.raises(OutOfOrderSequenceNumber, match="at offset 6"):
        log.append(batch(4, 0, 4, 2) + batch(4, 0, 7), leader_epoch=0, now_ms=T0)
    assert log.log_end_offset == 4
    assert append(log, batch(4, 0, 2, 2)) == 2


def test_a_producer_in_a_transaction_appends_only_transactional_batches(
        open_storage: StorageFactory) -> None:
    # Kafka's ProducerAppendInfo: an open transaction takes only transactional writes.
    log = new_log(open_storage())
    append(log, batch(6, 2, 0, transactional=True))
    with pytest.raises(InvalidTxnState) as raised:
        append(log, batch(6, 2, 1))
    assert raised.value.error_code == 48
    with pytest.raises(InvalidProducerEpoch):
        append(log, batch(6, 1, 1, transactional=True))
    assert log.log_end_offset == 1


def test_coordinator_appends_check_epochs_not_sequences(open_storage: StorageFactory) -> None:
    log = new_log(open_storage())
    append(log, batch(8, 1, 0), origin=ORIGIN_COORDINATOR)
    assert append(log, batch(8, 1, 50), origin=ORIGIN_COORDINATOR) == 1
    with pytest.raises(InvalidProducerEpoch):
        append(log, batch(8, 0, 51), origin=ORIGIN_COORDINATOR)


def test_idle_producers_expire(open_storage: StorageFactory) -> None:
    storage = open_storage(producer_id_expiration_ms=1000)
    log = new_log(storage)
    append(log, batch(1, 0, 0, ts=T0))
    append(log, batch(2, 0, 0, ts=T0 + 600))
    state = log.producer_state
    with pytest.raises(OutOfOrderSequenceNumber):
        append(log, batch(1, 0, 5))
    assert storage.remove_expired_producers(T0 + 999) == 0
    assert storage.remove_expired_producers(T0 + 1000) == 1  # idle for expiration.ms: gone
    assert [e.producer_id for e in state.active_producers()] == [2]
    # Forgotten: any sequence is accepted again.
    assert append(log, batch(1, 0, 5, ts=T0 + 1000)) == 2
    assert storage.remove_expired_producers(T0 + 1600) == 1
    assert [e.producer_id for e in state.active_producers()] == [1]


def test_active_producers_describe_the_last_batch(open_storage: StorageFactory) -> None:
    log = new_log(open_storage())
    append(log, batch(12, 3, 0, 4, ts=T0 + 7))
    append(log, batch(11, 0, 10, 1, ts=T0 + 9))
    (a, b) = log.producer_state.active_producers()
    assert (a.producer_id, a.producer_epoch, a.last_seq, a.last_timestamp) == (11, 0, 10, T0 + 9)
    assert (b.producer_id, b.producer_epoch, b.last_seq, b.last_timestamp) == (12, 3, 3, T0 + 7)
    assert a.coordinator_epoch == -1 and a.current_txn_first_offset is None


def test_log_append_time_topics_remember_the_append_time(open_storage: StorageFactory) -> None:
    log = new_log(open_storage(), message_timestamp_type="LogAppendTime")
    first = batch(3, 0, 0, 2, ts=T0 - 50_000)
    assert log.append(first, leader_epoch=0, now_ms=T0 + 1).log_append_time == T0 + 1
    again = log.append(first, leader_epoch=0, now_ms=T0 + 2)
    assert (again.base_offset, again.log_append_time) == (0, T0 + 1)
