from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.logger import globalLogPublisher

from tests.brokers import BrokerProcess, InProcessBroker, start_in_process, start_process
from tests.kafka_peer import KafkaPeer, start_kafka
from tests.postgres import PostgresServer, find_bin_dir


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked slow run only when asked for (AKFAK_SLOW=1, or -m naming slow); each
    has a smaller variant that always runs."""
    if os.environ.get("AKFAK_SLOW") == "1" or "slow" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason="slow: set AKFAK_SLOW=1 or select with -m slow")
    for item in items:
        if item.get_closest_marker("slow") is not None:
            item.add_marker(skip)


@pytest.fixture
def inproc(tmp_path: Path) -> Iterator[InProcessBroker]:
    """A broker in the test's reactor, in-memory storage, on a free port."""
    broker = start_in_process(tmp_path / "data")
    yield broker
    pytest_twisted.blockon(broker.service.stopService())


@pytest.fixture
def broker_process(tmp_path: Path) -> Iterator[Any]:
    """A factory starting broker subprocesses; all are stopped after the test."""
    started: list[BrokerProcess] = []

    def start(*extra: str, data_dir: Path | None = None, **kwargs: Any) -> BrokerProcess:
        proc = start_process(data_dir or tmp_path / "data", *extra, **kwargs)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.proc.poll() is None:
            proc.stop()


@pytest.fixture
def log_events() -> Iterator[list[dict[str, Any]]]:
    """Every twisted.logger event emitted during the test."""
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the session (tests/postgres.py): initdb into a temporary
    directory; skips only where Debian's postgresql binaries are not installed."""
    if find_bin_dir() is None:
        pytest.skip("PostgreSQL's initdb and pg_ctl are not installed (apt-get install postgresql)")
    server = PostgresServer.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def akfak_cluster(postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[Any]:
    """`akfak_cluster(n=3, **options)`: starts n akfak brokers (subprocesses, node ids 1..n)
    over one new PostgreSQL database and returns the AkfakCluster (tests/cluster.py; options:
    `listeners`, `properties`, `node_properties`); every cluster a module started is stopped
    after it."""
    from tests.cluster import AkfakCluster

    started: list[AkfakCluster] = []

    def start(n: int = 3, **options: Any) -> AkfakCluster:
        cluster = AkfakCluster.start(postgres.new_database(),
                                     tmp_path_factory.mktemp("cluster"), n, **options)
        started.append(cluster)
        return cluster

    yield start
    for cluster in started:
        cluster.stop()


@pytest.fixture(scope="module")
def kafka_peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaPeer]:
    """A real Kafka 4.1.1 broker (tests/kafka_peer.py) shared by a test module's tests, each
    using topics and ids of its own; skips where no JVM or Maven Central is at hand."""
    from tests.jvm import build

    build()
    peer = start_kafka(tmp_path_factory.mktemp("kafka"))
    yield peer
    peer.stop()


CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Debian chromium under Playwright (the web console's tests); skipped without it."""
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        # the system browser: Playwright downloads none
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()
