"""Transactions over raw sockets: the coordinator's answers on every error path Kafka
defines, old and new versions (the epoch bumped by EndTxn v5, not by a transaction whose
partitions came by AddPartitionsToTxn v5), and the read_committed view of the log.
Batches are built and parsed by tests/recordbatch.py, independently of the broker.
"""

from __future__ import annotations

from typing import Any

import pytest_twisted
from kio.schema.errors import ErrorCode
from kio.schema.types import ProducerId
from kio.static.primitive import i8, i16, i32, i64

from tests.recordbatch import parse_batches
from tests.requests import _module, build, fetch
from tests.test_consumer_groups_protocol import heartbeat
from tests.test_idempotence import batch, in_thread, init_producer_id, produce_one
from tests.wire import WireClient


def add_partitions(tid: str, pid: int, epoch: int, parts: dict[str, list[int]], *,
                   version: int = 3, verify_only: bool = True) -> Any:
    m = _module(24, version)
    topics = tuple(m.AddPartitionsToTxnTopic(name=t, partitions=tuple(i32(p) for p in ps))
                   for t, ps in parts.items())
    if version <= 3:
        return m.AddPartitionsToTxnRequest(
            v3_and_below_transactional_id=tid, v3_and_below_producer_id=ProducerId(pid),
            v3_and_below_producer_epoch=i16(epoch), v3_and_below_topics=topics)
    return m.AddPartitionsToTxnRequest(transactions=(m.AddPartitionsToTxnTransaction(
        transactional_id=tid, producer_id=ProducerId(pid), producer_epoch=i16(epoch),
        verify_only=verify_only, topics=topics),))


def end_txn(tid: str, pid: int, epoch: int, commit: bool, *, version: int = 3) -> Any:
    m = _module(26, version)
    return m.EndTxnRequest(transactional_id=tid, producer_id=ProducerId(pid),
                           producer_epoch=i16(epoch), committed=commit)


def errors_v3(response: Any) -> dict[tuple[str, int], ErrorCode]:
    return {(t.name, int(p.partition_index)): p.partition_error_code
            for t in response.results_by_topic_v3_and_below for p in t.results_by_partition}


def find_txn_coordinator(c: WireClient, tid: str) -> Any:
    m = _module(10, 3)
    return c.request(build(m.FindCoordinatorRequest, key=tid, key_type=i8(1)))


@pytest_twisted.inlineCallbacks
def test_the_coordinators_error_paths(inproc: Any) -> Any:
    inproc.broker.controller.create_topic("t", 2)

    def check() -> None:
        with WireClient(inproc.port) as c:
            assert find_txn_coordinator(c, "tx").error_code == ErrorCode.none
            assert c.request(init_producer_id("tx", timeout_ms=900_001)).error_code == \
                ErrorCode.invalid_transaction_timeout
            init = c.request(init_producer_id("tx"))
            pid, epoch = int(init.producer_id), int(init.producer_epoch)
            # EndTxn with nothing begun, unknown ids, wrong producer ids and epochs.
            assert c.request(end_txn("tx", pid, epoch, True)).error_code == \
                ErrorCode.invalid_txn_state
            assert c.request(end_txn("nope", pid, epoch, True)).error_code == \
                ErrorCode.invalid_producer_id_mapping
            assert c.request(end_txn("tx", pid + 1, epoch, True)).error_code == \
                ErrorCode.invalid_producer_id_mapping
            assert errors_v3(c.request(add_partitions("tx", pid, epoch + 1, {"t": [0]}))) == {
                ("t", 0): ErrorCode.producer_fenced}
            assert errors_v3(c.request(add_partitions("tx", pid, epoch + 1, {"t": [0]},
                                                      version=1))) == {
                ("t", 0): ErrorCode.invalid_producer_epoch}
            # An unknown partition fails alone; the others are not attempted.
            assert errors_v3(c.request(add_partitions("tx", pid, epoch, {"t": [0], "x": [0]}))) \
                == {("t", 0): ErrorCode.operation_not_attempted,
                    ("x", 0): ErrorCode.unknown_topic_or_partition}
            # Produce to a partition not added: refused, never silently accepted.
            assert produce_one(c, "t", batch(pid, epoch, 0, transactional=True),
                               transactional_id="tx").error_code == ErrorCode.invalid_txn_state
            assert errors_v3(c.request(add_partitions("tx", pid, epoch, {"t": [0]}))) == {
                ("t", 0): ErrorCode.none}
            # KIP-890 verification (v4+, verify_only): partition 1 is not in the transaction.
            verified = c.request(add_partitions("tx", pid, epoch, {"t": [0, 1]}, version=4))
            (result,) = verified.results_by_transaction
            assert {int(p.partition_index): p.partition_error_code
                    for t in result.topic_results for p in t.results_by_partition} == {
                0: ErrorCode.none, 1: ErrorCode.transaction_abortable}
            assert produce_one(c, "t", batch(pid, epoch, 0, 2, transactional=True),
                               transactional_id="tx").base_offset == 0
            # A second InitProducerId aborts the open transaction: retry, then a new epoch.
            assert c.request(init_producer_id("tx")).error_code == \
                ErrorCode.concurrent_transactions
            again = c.request(init_producer_id("tx"))
            assert again.error_code == ErrorCode.none and int(again.producer_epoch) == epoch + 2
            # The zombie is fenced: its batches and its commit are refused.
            assert c.request(end_txn("tx", pid, epoch, True)).error_code == \
                ErrorCode.producer_fenced
            assert c.request(end_txn("tx", pid, epoch, True, version=1)).error_code == \
                ErrorCode.invalid_producer_epoch
            zombie = produce_one(c, "t", batch(pid, epoch, 2, transactional=True),
                                 transactional_id="tx")
            assert zombie.error_code == ErrorCode.invalid_producer_epoch
            # What is in the log: the aborted batch and its ABORT marker (offset 2).
            committed = c.request(fetch({"t": {0: 0}}, isolation_level=1, version=12))
            (partition,) = committed.responses[0].partitions
            assert int(partition.last_stable_offset) == int(partition.high_watermark) == 3
            assert [(int(a.producer_id), int(a.first_offset))
                    for a in partition.aborted_transactions] == [(pid, 0)]
            records = parse_batches([partition.records])
            assert [r.control for r in records] == [False, False, True]

    yield in_thread(check)


@pytest_twisted.inlineCallbacks
def test_read_committed_stops_at_the_open_transaction(inproc: Any) -> Any:
    inproc.broker.controller.create_topic("t", 1)

    def check() -> None:
        with WireClient(inproc.port) as c:
            init = c.request(init_producer_id("tx2"))
            pid, epoch = int(init.producer_id), int(init.producer_epoch)
            produce_one(c, "t", batch(pid + 1000, 0, 0))  # offset 0: not transactional
            assert errors_v3(c.request(add_partitions("tx2", pid, epoch, {"t": [0]}))) == {
                ("t", 0): ErrorCode.none}
            produce_one(c, "t", batch(pid, epoch, 0, 3, transactional=True), transactional_id="tx2")

            def latest(isolation: int) -> int:
                response = c.request(_list_latest(isolation))
                return int(response.topics[0].partitions[0].offset)

            assert (latest(0), latest(1)) == (4, 1)
            view = c.request(fetch({"t": {0: 0}}, isolation_level=1, version=12))
            (partition,) = view.responses[0].partitions
            assert int(partition.last_stable_offset) == 1
            assert [r.offset for r in parse_batches([partition.records])] == [0]
            assert c.request(end_txn("tx2", pid, epoch, True)).error_code == ErrorCode.none
            assert (latest(0), latest(1)) == (5, 5)
            # DescribeTransactions / ListTransactions see it completed.
            m65, m66 = _module(65, 0), _module(66, 1)
            # (kio's reader refuses the -1 start time of an unknown id, so only this one)
            (state,) = c.request(m65.DescribeTransactionsRequest(
                transactional_ids=("tx2",))).transaction_states
            assert state.transaction_state == "CompleteCommit"
            assert int(state.producer_id) == pid
            listed = c.request(m66.ListTransactionsRequest(
                state_filters=("CompleteCommit", "Bogus"), producer_id_filters=(),
                duration_filter=i64(-1)))
            assert [s.transactional_id for s in listed.transaction_states] == ["tx2"]
            assert listed.unknown_state_filters == ("Bogus",)

    yield in_thread(check)


def _list_latest(isolation: int) -> Any:
    m = _module(2, 7)
    return m.ListOffsetsRequest(
        replica_id=i32(-1), isolation_level=i8(isolation), topics=(m.ListOffsetsTopic(
            name="t", partitions=(m.ListOffsetsPartition(
                partition_index=i32(0), current_leader_epoch=i32(-1), timestamp=i64(-1)),)),))


def offset_fetch_stable(group: str, topic: str) -> Any:
    m = _module(9, 9)
    return build(m.OffsetFetchRequest, require_stable=True, groups=(m.OffsetFetchRequestGroup(
        group_id=group, member_id=None, member_epoch=i32(-1),
        topics=(m.OffsetFetchRequestTopics(name=topic, partition_indexes=(i32(0),)),)),))


def write_txn_markers(pid: int, epoch: int, commit: bool, parts: dict[str, list[int]]) -> Any:
    m = _module(27, 1)
    return build(m.WriteTxnMarkersRequest, markers=(m.WritableTxnMarker(
        producer_id=ProducerId(pid), producer_epoch=i16(epoch), transaction_result=commit,
        coordinator_epoch=i32(0), topics=tuple(
            m.WritableTxnMarkerTopic(name=t, partition_indexes=tuple(i32(p) for p in ps))
            for t, ps in parts.items())),))


@pytest_twisted.inlineCallbacks
def test_write_txn_markers_over_the_wire_settles_pending_offsets(inproc: Any) -> Any:
    """WriteTxnMarkers (a broker-to-broker API) writes the markers it names as a partition
    leader does: a COMMIT in `__consumer_offsets` makes the transaction's offsets stable."""
    inproc.broker.controller.create_topic("t", 1)
    offsets_partition = inproc.broker.group_coordinator.partition_for("g")

    def check() -> None:
        with WireClient(inproc.port) as c:
            assert find_txn_coordinator(c, "wtm").error_code == ErrorCode.none
            init = c.request(init_producer_id("wtm"))
            pid, epoch = int(init.producer_id), int(init.producer_epoch)
            m = _module(25, 4)
            added = c.request(build(m.AddOffsetsToTxnRequest, transactional_id="wtm",
                                    producer_id=ProducerId(pid), producer_epoch=i16(epoch),
                                    group_id="g"))
            assert added.error_code == ErrorCode.none
            m = _module(28, 4)
            committed = c.request(build(
                m.TxnOffsetCommitRequest, transactional_id="wtm", group_id="g",
                producer_id=ProducerId(pid), producer_epoch=i16(epoch), generation_id=i32(-1),
                member_id="", group_instance_id=None, topics=(m.TxnOffsetCommitRequestTopic(
                    name="t", partitions=(m.TxnOffsetCommitRequestPartition(
                        partition_index=i32(0), committed_offset=i64(5),
                        committed_leader_epoch=i32(-1), committed_metadata=""),)),)))
            assert committed.topics[0].partitions[0].error_code == ErrorCode.none
            fetched = c.request(offset_fetch_stable("g", "t")).groups[0]
            assert fetched.topics[0].partitions[0].error_code == ErrorCode.unstable_offset_commit

            answer = c.request(write_txn_markers(pid, epoch, True, {
                "__consumer_offsets": [offsets_partition], "t": [0], "missing": [0]}))
            results = {(t.name, int(p.partition_index)): p.error_code
                       for t in answer.markers[0].topics for p in t.partitions}
            assert results == {("__consumer_offsets", offsets_partition): ErrorCode.none,
                               ("t", 0): ErrorCode.none,
                               ("missing", 0): ErrorCode.unknown_topic_or_partition}
            part = c.request(offset_fetch_stable("g", "t")).groups[0].topics[0].partitions[0]
            assert (part.error_code, int(part.committed_offset)) == (ErrorCode.none, 5)

    yield in_thread(check)


def txn_offset_commit(pid: int, epoch: int, group: str, member_id: str, generation: int,
                      offset: int) -> Any:
    m = _module(28, 4)
    return build(m.TxnOffsetCommitRequest, transactional_id="cgt", group_id=group,
                 producer_id=ProducerId(pid), producer_epoch=i16(epoch), generation_id=i32(generation),
                 member_id=member_id, group_instance_id=None, topics=(m.TxnOffsetCommitRequestTopic(
                     name="t", partitions=(m.TxnOffsetCommitRequestPartition(
                         partition_index=i32(0), committed_offset=i64(offset),
                         committed_leader_epoch=i32(-1), committed_metadata=""),)),))


@pytest_twisted.inlineCallbacks
def test_txn_offset_commit_of_a_consumer_protocol_member(inproc: Any) -> Any:
    """A transactional commit into a consumer group (KIP-848) is checked against its member
    id and epoch as Kafka does: a stale epoch is ILLEGAL_GENERATION, an unknown member (or none
    while the group has members) UNKNOWN_MEMBER_ID, and no classic group appears beside it."""
    inproc.broker.controller.create_topic("t", 1)
    offsets_partition = inproc.broker.group_coordinator.partition_for("cg")

    def check() -> None:
        with WireClient(inproc.port) as c:
            joined = c.request(heartbeat("cg", "m-1", 0, names=["t"], owned={}, rebalance_ms=30_000))
            assert (joined.error_code, int(joined.member_epoch)) == (ErrorCode.none, 1)
            assert find_txn_coordinator(c, "cgt").error_code == ErrorCode.none
            init = c.request(init_producer_id("cgt"))
            pid, epoch = int(init.producer_id), int(init.producer_epoch)
            m = _module(25, 4)
            assert c.request(build(m.AddOffsetsToTxnRequest, transactional_id="cgt",
                                   producer_id=ProducerId(pid), producer_epoch=i16(epoch),
                                   group_id="cg")).error_code == ErrorCode.none

            def commit(member_id: str, generation: int, offset: int) -> ErrorCode:
                answer = c.request(txn_offset_commit(pid, epoch, "cg", member_id, generation, offset))
                return answer.topics[0].partitions[0].error_code

            assert commit("m-1", 0, 3) == ErrorCode.illegal_generation
            assert commit("nobody", 1, 3) == ErrorCode.unknown_member_id
            assert commit("", -1, 3) == ErrorCode.unknown_member_id
            assert commit("m-1", 1, 7) == ErrorCode.none
            listed = c.request(build(_module(16, 5).ListGroupsRequest, states_filter=(), types_filter=()))
            assert [(g.group_id, g.group_type) for g in listed.groups] == [("cg", "consumer")]
            c.request(write_txn_markers(pid, epoch, True, {"__consumer_offsets": [offsets_partition]}))
            part = c.request(offset_fetch_stable("cg", "t")).groups[0].topics[0].partitions[0]
            assert (part.error_code, int(part.committed_offset)) == (ErrorCode.none, 7)

    yield in_thread(check)


@pytest_twisted.inlineCallbacks
def test_end_txn_v4_keeps_the_epoch_of_partitions_added_by_v5(inproc: Any) -> Any:
    """@platformatic/kafka adds partitions with AddPartitionsToTxn v5 and ends with EndTxn
    v4: as in Kafka, the EndTxn's version decides the epoch bump (none before v5)."""
    inproc.broker.controller.create_topic("t", 1)

    def check() -> None:
        with WireClient(inproc.port) as c:
            assert find_txn_coordinator(c, "v5-adder").error_code == ErrorCode.none
            init = c.request(init_producer_id("v5-adder"))
            pid, epoch = int(init.producer_id), int(init.producer_epoch)

            def add() -> ErrorCode:
                (result,) = c.request(add_partitions("v5-adder", pid, epoch, {"t": [0]}, version=5,
                                                     verify_only=False)).results_by_transaction
                return result.topic_results[0].results_by_partition[0].partition_error_code

            for n in range(2):
                assert add() == ErrorCode.none, n
                assert produce_one(c, "t", batch(pid, epoch, n, transactional=True),
                                   transactional_id="v5-adder").error_code == ErrorCode.none
                ended = c.request(end_txn("v5-adder", pid, epoch, True, version=4))
                assert ended.error_code == ErrorCode.none, n
            # v5 bumps it, and says so
            assert add() == ErrorCode.none
            ended = c.request(end_txn("v5-adder", pid, epoch, True, version=5))
            assert (ended.error_code, int(ended.producer_epoch)) == (ErrorCode.none, epoch + 1)

    yield in_thread(check)
