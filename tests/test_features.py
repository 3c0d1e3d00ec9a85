"""Cluster features: ApiVersions v3+ SupportedFeatures/FinalizedFeatures, UpdateFeatures, and
what the Java client does with them (transaction version 2 when finalized, 1 after a
downgrade), each Java case run against akfak and a real Kafka 4.1.1 broker."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from kio.schema.errors import ErrorCode
from kio.static.primitive import i8, i16

from akfak import features
from tests.jvm import build, run_java
from tests.kafka_peer import KafkaPeer
from tests.kafka_tools import run_tool
from tests.requests import _module
from tests.requests import build as make
from tests.test_idempotence import in_thread
from tests.wire import WireClient

NEW_CLUSTER = {"metadata.version": 27, "group.version": 1, "transaction.version": 2,
               "eligible.leader.replicas.version": 1}


def api_versions(c: WireClient, version: int = 4) -> Any:
    m = _module(18, version)
    if version >= 3:
        return c.request(make(m.ApiVersionsRequest, client_software_name="akfak-tests",
                              client_software_version="1"))
    return c.request(make(m.ApiVersionsRequest))


def update_features(c: WireClient, *updates: tuple[str, int, int], version: int = 2,
                    validate_only: bool = False) -> Any:
    m = _module(57, version)
    if version == 0:
        keys = tuple(m.FeatureUpdateKey(feature=n, max_version_level=i16(level),
                                        allow_downgrade=kind != features.UPGRADE)
                     for n, level, kind in updates)
        return c.request(make(m.UpdateFeaturesRequest, feature_updates=keys))
    keys = tuple(m.FeatureUpdateKey(feature=n, max_version_level=i16(level), upgrade_type=i8(kind))
                 for n, level, kind in updates)
    return c.request(make(m.UpdateFeaturesRequest, feature_updates=keys,
                          validate_only=validate_only))


def finalized(response: Any) -> dict[str, int]:
    assert all(f.min_version_level == f.max_version_level for f in response.finalized_features)
    return {f.name: int(f.max_version_level) for f in response.finalized_features}


@pytest_twisted.inlineCallbacks
def test_api_versions_lists_supported_and_finalized_features(inproc: Any) -> Any:
    def check() -> None:
        with WireClient(inproc.port) as c:
            for version in (3, 4):
                answer = api_versions(c, version)
                assert [(f.name, f.min_version, f.max_version) for f in answer.supported_features] == [
                    ("group.version", 0, 1), ("kraft.version", 0, 0), ("metadata.version", 7, 27),
                    ("share.version", 0, 1), ("transaction.version", 0, 2),
                    ("eligible.leader.replicas.version", 0, 1)]
                assert finalized(answer) == NEW_CLUSTER
                assert answer.finalized_features_epoch == inproc.broker.image.offset >= 2
                assert answer.zk_migration_ready is False
            keys = {int(k.api_key) for k in api_versions(c, 2).api_keys}
            assert 57 in keys

    yield in_thread(check)


@pytest_twisted.inlineCallbacks
def test_update_features_over_the_wire(inproc: Any) -> Any:
    def check() -> None:
        with WireClient(inproc.port) as c:
            epoch = api_versions(c).finalized_features_epoch
            # v2: only a top-level error; nothing changes on an error or with validate_only
            refused = update_features(c, ("transaction.version", 1, features.UPGRADE))
            assert (refused.error_code, refused.error_message) == (
                ErrorCode(95), "The update failed for all features since the following feature "
                "had an error: Invalid update version 1 for feature transaction.version. Can't "
                "downgrade the version of this feature without setting the upgrade type to "
                "either safe or unsafe downgrade.")
            checked = update_features(c, ("transaction.version", 1, features.SAFE_DOWNGRADE),
                                      validate_only=True)
            assert checked.error_code == ErrorCode.none
            assert finalized(api_versions(c)) == NEW_CLUSTER
            twice = update_features(c, ("transaction.version", 1, 2), ("transaction.version", 0, 2))
            assert twice.error_code == ErrorCode.invalid_request
            # v1: a result per feature on success, none on error
            done = update_features(c, ("transaction.version", 1, features.SAFE_DOWNGRADE), version=1)
            assert (done.error_code, [(r.feature, r.error_code) for r in done.results]) == (
                ErrorCode.none, [("transaction.version", ErrorCode.none)])
            bad = update_features(c, ("share.version", 2, features.UPGRADE), version=1)
            assert (bad.error_code, bad.results) == (ErrorCode(95), ())
            # v0: allow_downgrade; level 0 removes the feature
            gone = update_features(c, ("transaction.version", 0, features.SAFE_DOWNGRADE), version=0)
            assert [(r.feature, r.error_code) for r in gone.results] == [
                ("transaction.version", ErrorCode.none)]
            after = api_versions(c)
            assert finalized(after) == {"metadata.version": 27, "group.version": 1,
                                        "eligible.leader.replicas.version": 1}
            assert after.finalized_features_epoch > epoch

    yield in_thread(check)


def test_finalized_levels_survive_a_restart_and_an_old_directory_keeps_its_level(
        broker_process: Any, tmp_path: Path) -> None:
    first = broker_process()
    with WireClient(first.port) as c:
        assert update_features(c, ("transaction.version", 1, 2)).error_code == ErrorCode.none
    first.stop()
    again = broker_process(data_dir=first.data_dir)
    with WireClient(again.port) as c:
        assert finalized(api_versions(c)) == {**NEW_CLUSTER, "transaction.version": 1}


# -- the Java client, on akfak and on Kafka 4.1.1 ------------------------------------------



# Kafka's run (which shows the expectations are Kafka's) is opt-in (AKFAK_SLOW=1): the budget.
@pytest.fixture(params=["akfak", pytest.param("kafka", marks=pytest.mark.slow)])
def bootstrap(request: pytest.FixtureRequest, broker_process: Any) -> str:
    build()
    if request.param == "kafka":
        return str(request.getfixturevalue("kafka_peer").bootstrap)
    return str(broker_process("-o", "group.initial.rebalance.delay.ms=0").bootstrap)


def describe(bootstrap: str) -> dict[str, Any]:
    return run_java("Features", bootstrap, "describe=true").check().last("features")


def transaction_epochs(bootstrap: str, tid: str, transactions: int) -> tuple[int, int]:
    """The producer epoch after InitProducerId and after `transactions` commits."""
    run_java("Admin", bootstrap, f"create={tid}:2").check()
    run_java("TxnProducer", bootstrap, f"topic={tid}", "records=2", "per-txn=2",
             f"transactional-id={tid}").check()
    start = run_java("Features", bootstrap, f"transaction={tid}").check().last("transaction")
    run_java("TxnProducer", bootstrap, f"topic={tid}", f"records={2 * transactions}", "per-txn=2",
             f"transactional-id={tid}").check()
    end = run_java("Features", bootstrap, f"transaction={tid}").check().last("transaction")
    assert start["producerId"] == end["producerId"] and end["state"] == "CompleteCommit"
    return start["epoch"], end["epoch"]


@pytest.mark.jvm
@pytest.mark.timeout(600)
def test_java_client_features_and_transaction_versions(bootstrap: str) -> None:
    """describeFeatures shows Kafka 4.1's levels; with transaction.version 2 the producer bumps
    its epoch at every commit (KIP-890 part 2: EndTxn v5, Produce v12 adding partitions), and
    after a downgrade to 1 it runs the old way (AddPartitionsToTxn, one epoch)."""
    described = describe(bootstrap)
    for name, level in NEW_CLUSTER.items():
        assert described["finalized"][name] == level
        assert described["supported"][name][1] >= level
    assert described["epoch"] >= 0

    before, after = transaction_epochs(bootstrap, "tv2-epochs", 3)
    assert after == before + 1 + 3  # the second producer's InitProducerId, then each commit

    refused = run_java("Features", bootstrap, "update=transaction.version:3")
    assert refused.returncode != 0
    error = refused.last("error")
    assert "org.apache.kafka.common.errors.InvalidUpdateVersionException" in error["causes"]
    assert "Invalid update version 3 for feature transaction.version" in error["message"]

    run_java("Features", bootstrap, "update=transaction.version:1:safe").check()
    try:
        assert describe(bootstrap)["finalized"]["transaction.version"] == 1
        before, after = transaction_epochs(bootstrap, "tv1-epochs", 3)
        assert after == before + 1  # InitProducerId only
    finally:  # the Kafka peer is shared by the module
        run_java("Features", bootstrap, "update=transaction.version:2").check()
    assert describe(bootstrap)["finalized"]["transaction.version"] == 2


@pytest.mark.jvm
@pytest.mark.timeout(600)
def test_kafka_features_tool_prints_what_it_prints_for_kafka(kafka_peer: KafkaPeer,
                                                            broker_process: Any) -> None:
    """`kafka-features` (FeatureCommand of kafka-tools 4.1.1): describe, a refused upgrade, a
    downgrade and an upgrade back print the same on akfak as on Kafka, up to the epochs and
    the features akfak does not serve (group.version, kraft.version, share.version)."""
    brokers = {"akfak": broker_process().bootstrap, "kafka": kafka_peer.bootstrap}
    served = ("metadata.version", "transaction.version", "eligible.leader.replicas.version")

    def on_both(*args: str) -> dict[str, tuple[int, list[str]]]:
        runs = {name: run_tool("FeatureCommand", "--bootstrap-server", bootstrap, *args)
                for name, bootstrap in brokers.items()}
        return {name: (run.returncode, [re.sub(r"\tEpoch: \d+", "", line)
                                        for line in run.stdout.splitlines()
                                        if not line.startswith("Feature: ")
                                        or line.split("\t")[0][9:] in served])
                for name, run in runs.items()}

    def same(*args: str) -> list[str]:
        runs = on_both(*args)
        assert runs["akfak"] == runs["kafka"], runs
        return runs["akfak"][1]

    assert same("describe") == [
        "Feature: eligible.leader.replicas.version\tSupportedMinVersion: 0\tSupportedMaxVersion: 1"
        "\tFinalizedVersionLevel: 1",
        "Feature: metadata.version\tSupportedMinVersion: 3.3-IV3\tSupportedMaxVersion: 4.1-IV1"
        "\tFinalizedVersionLevel: 4.1-IV1",
        "Feature: transaction.version\tSupportedMinVersion: 0\tSupportedMaxVersion: 2"
        "\tFinalizedVersionLevel: 2"]
    assert same("upgrade", "--feature", "transaction.version=3") == [
        "Could not upgrade transaction.version to 3. The update failed for all features since the "
        "following feature had an error: Invalid update version 3 for feature transaction.version."
        " Local controller 1 only supports versions 0-2"]
    assert same("upgrade", "--feature", "transaction.version=1") != []  # a downgrade: refused
    assert same("downgrade", "--feature", "transaction.version=1", "--dry-run") == [
        "transaction.version can be downgraded to 1."]
    assert same("downgrade", "--feature", "transaction.version=1") == [
        "transaction.version was downgraded to 1."]
    assert same("upgrade", "--feature", "transaction.version=2") == [
        "transaction.version was upgraded to 2."]
    assert same("downgrade", "--feature", "metadata.version=17") == [
        "Could not downgrade metadata.version to 17. The update failed for all features since the "
        "following feature had an error: Invalid metadata.version 17. Refusing to perform the "
        "requested downgrade because it might delete metadata information."]
