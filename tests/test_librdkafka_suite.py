"""librdkafka's own transaction test, 0103_transactions (its tests/test-runner, quick mode),
against three akfak brokers over one PostgreSQL set up as trivup sets up a test cluster:
topics of replication factor 3 for real, `__transaction_state` and `__consumer_offsets` with
three replicas, so the transaction and group coordinators, and the partition leaders, are
spread over the brokers (Metadata auto-creation forwarded to the controller, TxnOffsetCommit
verified with a transaction coordinator on another broker, markers sent between brokers).

Slow (about 90 s) and opt-in; it needs the librdkafka build that
`scripts/librdkafka_tests.py` makes once (in $AKFAK_LIBRDKAFKA_CACHE, default
~/.cache/akfak-librdkafka) and skips without it. The script runs more tests, and Kafka.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import AkfakCluster

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "librdkafka_tests.py"


def suite() -> Any:
    spec = importlib.util.spec_from_file_location("librdkafka_tests", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_0103_transactions_on_three_brokers(postgres: Any, tmp_path: Path) -> None:
    script = suite()
    runner = script.runner_path()
    if not runner.exists():
        pytest.skip(f"no librdkafka test-runner at {runner}: run scripts/librdkafka_tests.py")
    cluster = AkfakCluster.start(postgres.new_database(), tmp_path, 3, properties=script.TRIVUP)
    try:
        state, reason = script.run_test(runner, "0103", cluster.bootstrap, tmp_path, "default",
                                        300)
    finally:
        cluster.stop()
    assert state == "PASSED", (
        f"{state} {reason}:\n" + (tmp_path / "0103.log").read_text(errors="replace")[-4000:])
