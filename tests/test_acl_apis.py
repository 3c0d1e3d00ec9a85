"""The APIs tests/test_acl_checks.py does not sample, asked on the wire by a principal
(User:ANONYMOUS) with that file's ACLs, answered as Kafka 4.1.1 answers them: DeleteRecords,
OffsetDelete, OffsetCommit, DeleteGroups, ConsumerGroupDescribe, ListOffsets,
OffsetForLeaderEpoch, DescribeProducers, AddPartitionsToTxn,
AddOffsetsToTxn, EndTxn, TxnOffsetCommit, AlterPartitionReassignments,
ListPartitionReassignments, UpdateFeatures, AlterReplicaLogDirs, DescribeUserScramCredentials,
DescribeClientQuotas.  Each answer is summed up as its error codes by name, partition and
resource, and compared whole."""

from __future__ import annotations

import dataclasses
import importlib
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from kio.static.primitive import i8, i16, i32, i32Timedelta, i64

from tests.brokers import BrokerProcess, start_process
from tests.kafka_peer import start_kafka
from tests.test_acl_checks import ANON, STANDARD, prepare
from tests.wire import WireClient

#: The fields an answer is summed up by: errors, and what says which resource they are for.
KEEP = {"name", "topic", "topic_name", "group_id", "transactional_id",
        "partition_index", "partition", "feature", "user"}


def summary(answer: Any) -> Any:
    """The answer's error codes with the names and indexes they are for, in a form that does
    not depend on order (lists sorted)."""
    if not dataclasses.is_dataclass(answer):
        return answer
    out: dict[str, Any] = {}
    for f in dataclasses.fields(answer):
        value = getattr(answer, f.name)
        if f.name.endswith("error_code"):  # also AddPartitionsToTxn's partition_error_code
            out[f.name] = int(value)
        elif f.name in KEEP:
            out[f.name] = value
        elif isinstance(value, tuple) and value and dataclasses.is_dataclass(value[0]):
            out[f.name] = sorted((summary(v) for v in value), key=repr)
    return out


def _m(api: str, version: int) -> Any:
    return importlib.import_module(f"kio.schema.{api}.v{version}.request")


def _timeout() -> Any:
    return i32Timedelta.parse(timedelta(seconds=10))


def requests() -> dict[str, Any]:
    """One request per API, each naming resources the principal may and may not use."""
    out: dict[str, Any] = {}
    m = _m("delete_records", 2)
    out["delete_records"] = m.DeleteRecordsRequest(timeout=_timeout(), topics=tuple(
        m.DeleteRecordsTopic(name=t, partitions=(m.DeleteRecordsPartition(
            partition_index=i32(0), offset=i64(0)),)) for t in ("open", "hidden", "any-user")))
    m = _m("offset_delete", 0)
    for group in ("bad", "g-none"):
        out[f"offset_delete {group}"] = m.OffsetDeleteRequest(group_id=group, topics=tuple(
            m.OffsetDeleteRequestTopic(name=t, partitions=(m.OffsetDeleteRequestPartition(
                partition_index=i32(0)),)) for t in ("open", "hidden")))
    m = _m("offset_commit", 9)
    for group in ("bad", "g-commit"):
        out[f"offset_commit {group}"] = m.OffsetCommitRequest(
            group_id=group, generation_id_or_member_epoch=i32(-1), member_id="", group_instance_id=None,
            topics=tuple(m.OffsetCommitRequestTopic(name=t, partitions=(m.OffsetCommitRequestPartition(
                partition_index=i32(0), committed_offset=i64(0), committed_leader_epoch=i32(-1),
                committed_metadata=None),)) for t in ("open", "hidden", "pre-secret")))
    m = _m("delete_groups", 2)
    out["delete_groups"] = m.DeleteGroupsRequest(groups_names=("bad", "g-none"))
    m = _m("consumer_group_describe", 0)
    out["consumer_group_describe"] = m.ConsumerGroupDescribeRequest(
        group_ids=("bad", "g-none"), include_authorized_operations=True)
    m = _m("list_offsets", 8)
    out["list_offsets"] = m.ListOffsetsRequest(replica_id=i32(-1), isolation_level=i8(0), topics=tuple(
        m.ListOffsetsTopic(name=t, partitions=(m.ListOffsetsPartition(
            partition_index=i32(0), current_leader_epoch=i32(-1), timestamp=i64(-1)),))
        for t in ("open", "hidden", "nowhere")))
    m = _m("offset_for_leader_epoch", 4)
    out["offset_for_leader_epoch"] = m.OffsetForLeaderEpochRequest(replica_id=i32(-1), topics=tuple(
        m.OffsetForLeaderTopic(topic=t, partitions=(m.OffsetForLeaderPartition(
            partition=i32(0), current_leader_epoch=i32(-1), leader_epoch=i32(0)),))
        for t in ("open", "hidden")))
    m = _m("describe_producers", 0)
    out["describe_producers"] = m.DescribeProducersRequest(topics=tuple(
        m.TopicRequest(name=t, partition_indexes=(i32(0),)) for t in ("open", "hidden", "pre-secret")))
    m = _m("add_partitions_to_txn", 3)
    for txn in ("other", "tx-a"):
        out[f"add_partitions_to_txn {txn}"] = m.AddPartitionsToTxnRequest(
            v3_and_below_transactional_id=txn, v3_and_below_producer_id=i64(1),
            v3_and_below_producer_epoch=i16(0), v3_and_below_topics=tuple(
                m.AddPartitionsToTxnTopic(name=t, partitions=(i32(0),)) for t in ("open", "hidden")))
    m = _m("add_offsets_to_txn", 3)
    for txn, group in (("other", "g-x"), ("tx-a", "bad")):
        out[f"add_offsets_to_txn {txn} {group}"] = m.AddOffsetsToTxnRequest(
            transactional_id=txn, producer_id=i64(1), producer_epoch=i16(0), group_id=group)
    m = _m("end_txn", 3)
    out["end_txn"] = m.EndTxnRequest(transactional_id="other", producer_id=i64(1),
                                     producer_epoch=i16(0), committed=True)
    m = _m("txn_offset_commit", 3)
    for txn, group in (("other", "g-x"), ("tx-a", "bad"), ("tx-a", "g-x")):
        out[f"txn_offset_commit {txn} {group}"] = m.TxnOffsetCommitRequest(
            transactional_id=txn, group_id=group, producer_id=i64(1), producer_epoch=i16(0),
            generation_id=i32(-1), member_id="", group_instance_id=None, topics=tuple(
                m.TxnOffsetCommitRequestTopic(name=t, partitions=(m.TxnOffsetCommitRequestPartition(
                    partition_index=i32(0), committed_offset=i64(0), committed_leader_epoch=i32(-1),
                    committed_metadata=None),)) for t in ("open", "hidden")))
    m = _m("alter_partition_reassignments", 0)
    out["alter_partition_reassignments"] = m.AlterPartitionReassignmentsRequest(
        timeout=_timeout(), topics=(m.ReassignableTopic(name="open", partitions=(
            m.ReassignablePartition(partition_index=i32(0), replicas=(i32(1),)),)),))
    m = _m("list_partition_reassignments", 0)
    out["list_partition_reassignments"] = m.ListPartitionReassignmentsRequest(timeout=_timeout(),
                                                                              topics=None)
    m = _m("update_features", 1)
    out["update_features"] = m.UpdateFeaturesRequest(timeout=_timeout(), validate_only=True,
                                                     feature_updates=(m.FeatureUpdateKey(
                                                         feature="group.version", max_version_level=i16(1),
                                                         upgrade_type=i8(1)),))
    m = _m("alter_replica_log_dirs", 2)
    out["alter_replica_log_dirs"] = m.AlterReplicaLogDirsRequest(dirs=(m.AlterReplicaLogDir(
        path="/nowhere", topics=(m.AlterReplicaLogDirTopic(name="open", partitions=(i32(0),)),)),))
    m = _m("describe_user_scram_credentials", 0)
    # a user named: Kafka's error answer to users=null (every user) fails, and closes the connection
    out["describe_user_scram_credentials"] = m.DescribeUserScramCredentialsRequest(
        users=(m.UserName(name="alice"),))
    m = _m("describe_client_quotas", 1)
    out["describe_client_quotas"] = m.DescribeClientQuotasRequest(components=(), strict=False)
    return out


def answers(port: int) -> dict[str, Any]:
    """Each request's summed-up answer, "no answer" where the connection was closed or the
    answer did not come (a connection each: a closed one is not reused)."""
    out: dict[str, Any] = {}
    for name, request in requests().items():
        try:
            with WireClient(port, timeout=10) as client:
                out[name] = summary(client.request(request))
        except (TimeoutError, ConnectionError, OSError):
            out[name] = "no answer"

    return out


#: Answers of a broker still starting (leaders, coordinators loading): asked again.
TRANSIENT = {5, 6, 7, 14, 15, 16}


def settled_answers(port: int) -> dict[str, Any]:
    """answers(), asked again (every request may be repeated) while some are TRANSIENT."""
    deadline = time.monotonic() + 60
    while True:
        got = answers(port)
        if time.monotonic() > deadline or not any(
                code in TRANSIENT for summary in got.values() for _, code in flat(summary)):
            return got
        time.sleep(0.5)


AUTHORIZER = ("-o", f"authorizer.class.name={STANDARD}", "-o", "group.initial.rebalance.delay.ms=0")


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """akfak with test_acl_checks.py's ACLs, restarted without super users."""
    root = tmp_path_factory.mktemp("acl-apis")
    first = start_process(root / "data", *AUTHORIZER, "-o", f"super.users={ANON}")
    try:
        prepare(first.bootstrap)
    finally:
        first.stop()
    broker = start_process(root / "data", *AUTHORIZER)
    try:
        yield broker
    finally:
        broker.stop()


def flat(summary: Any, name: str = "") -> list[tuple[str, int]]:
    """(resource name, error code) pairs of a summed-up answer ("": the answer's own code)."""
    out: set[tuple[str, int]] = set()
    if isinstance(summary, dict):
        here = next((summary[k] for k in ("name", "topic", "topic_name", "group_id", "user")
                     if k in summary), name)
        for key, value in summary.items():
            if key.endswith("error_code"):
                out.add((here, value))
            elif isinstance(value, list):
                for item in value:
                    out.update(flat(item, here))
    return sorted(out)


#: What Kafka 4.1.1 answers (the comparison below): 29, 30, 31, 53: TOPIC_, GROUP_, CLUSTER_,
#: TRANSACTIONAL_ID_AUTHORIZATION_FAILED; 69 GROUP_ID_NOT_FOUND, 55 INVALID_PRODUCER_EPOCH,
#: 49 INVALID_PRODUCER_ID_MAPPING: past the ACLs.
EXPECTED = {
    "delete_records": [("any-user", 29), ("hidden", 29), ("open", 0)],  # any-user: READ only
    "offset_delete bad": [("", 30)],
    "offset_delete g-none": [("", 69)],
    "offset_commit bad": [("hidden", 30), ("open", 30), ("pre-secret", 30)],
    "offset_commit g-commit": [("hidden", 29), ("open", 0), ("pre-secret", 29)],  # DENY READ
    "delete_groups": [("bad", 30), ("g-none", 69)],
    "consumer_group_describe": [("bad", 30), ("g-none", 69)],
    "list_offsets": [("hidden", 29), ("nowhere", 29), ("open", 0)],
    # CLUSTER_ACTION on the cluster (ANONYMOUS has it) allows every topic, as for a follower
    "offset_for_leader_epoch": [("hidden", 0), ("open", 0)],
    "describe_producers": [("hidden", 29), ("open", 0), ("pre-secret", 29)],
    "add_partitions_to_txn other": [("hidden", 53), ("open", 53)],
    "add_partitions_to_txn tx-a": [("hidden", 29), ("open", 55)],
    "add_offsets_to_txn other g-x": [("", 53)],
    "add_offsets_to_txn tx-a bad": [("", 30)],
    "end_txn": [("", 53)],
    "txn_offset_commit other g-x": [("hidden", 53), ("open", 53)],
    "txn_offset_commit tx-a bad": [("hidden", 30), ("open", 30)],
    "txn_offset_commit tx-a g-x": [("hidden", 29), ("open", 49)],
    "alter_partition_reassignments": [("", 31), ("open", 31)],
    "list_partition_reassignments": [("", 31)],
    "update_features": [("", 31)],
    "alter_replica_log_dirs": [("open", 31)],
    "describe_user_scram_credentials": [("", 31)],
    "describe_client_quotas": [("", 31)],
}


def test_refusals(secured: BrokerProcess) -> None:
    got = {api: flat(summary) for api, summary in answers(secured.port).items()}
    assert got == EXPECTED


@pytest.mark.jvm
@pytest.mark.timeout(600)
def test_answers_match_kafka(secured: BrokerProcess, tmp_path: Path) -> None:
    first = start_kafka(tmp_path / "k1", properties={"authorizer.class.name": STANDARD, "super.users": ANON})
    try:
        prepare(first.bootstrap)
    finally:
        first.stop()
    peer = start_kafka(tmp_path / "k2", log_dir=tmp_path / "k1" / "kraft-logs",
                       properties={"authorizer.class.name": STANDARD})
    try:
        kafka = settled_answers(peer.port)
    finally:
        peer.stop()
    ours = answers(secured.port)
    different = {api: (ours[api], kafka[api]) for api in kafka if ours[api] != kafka[api]}
    assert not different, different
    assert {api: flat(summary) for api, summary in kafka.items()} == EXPECTED
