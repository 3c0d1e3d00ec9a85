"""Fixtures for the storage tests: both providers, a fake clock, Kafka's fixture directory."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.task import Clock

from akfak.config import BrokerConfig
from akfak.log.disk import DiskLogStorage
from akfak.log.memory import MemoryLogStorage
from akfak.log.postgres import PostgresLogStorage, PostgresPartitionLog
from akfak.log.storage import BaseLogStorage

ROOT = Path(__file__).resolve().parents[2]
#: 2023-11-14T22:13:20Z: the fake clock's start, in ms.
T0 = 1_700_000_000_000


def shared_dir() -> Path:
    return Path(os.environ.get("AKFAK_SHARED") or ROOT.parent / "shared")


@pytest.fixture
def kafka_fixture(tmp_path: Path) -> Path:
    """A writable copy of the log directory Apache Kafka wrote (topic foo, "Hello World!")."""
    source = shared_dir() / "fixtures" / "kafka-kraft-logs"
    if not source.is_dir():
        pytest.skip(f"Kafka-written fixture not found at {source} (set AKFAK_SHARED to the "
                    f"directory holding fixtures/kafka-kraft-logs)")
    target = tmp_path / "kafka-kraft-logs"
    shutil.copytree(source, target)
    for path in [target, *target.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)  # the fixture files are read-only
    return target


@pytest.fixture
def clock() -> Clock:
    c = Clock()
    c.advance(T0 / 1000)
    return c


def make_config(data_dir: Path, **properties: object) -> BrokerConfig:
    props = {"log.dir": str(data_dir)}
    props.update({k.replace("_", "."): str(v) for k, v in properties.items()})
    return BrokerConfig(properties=props)


StorageFactory = Callable[..., BaseLogStorage]


@pytest.fixture(params=["memory", "disk", "postgres", "postgres-tiny"])
def provider_variant(request: pytest.FixtureRequest) -> str:
    """postgres-tiny: the postgres provider with a cache of one byte per partition, so that
    every committed segment but the active one is read back from PostgreSQL."""
    return str(request.param)


@pytest.fixture
def provider(provider_variant: str) -> str:
    return provider_variant.removesuffix("-tiny")


def _read_committed_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """postgres-tiny: a read from a test first waits for the commits (so that segments
    leave the cache, as they do once committed) and for prepare_read, as Fetch does.  From
    inside the reactor (an async test) the read queries on the spot instead."""
    import greenlet

    read = PostgresPartitionLog.read

    def committed_read(self: PostgresPartitionLog, offset: int, max_bytes: int,
                       **kwargs: object) -> object:
        twisted_greenlet = pytest_twisted._instances.gr_twisted
        if twisted_greenlet is not None and greenlet.getcurrent() is not twisted_greenlet:
            pytest_twisted.blockon(self.flush())
            prepared = self.prepare_read(offset, max_bytes)
            if prepared is not None:
                pytest_twisted.blockon(prepared)
        return read(self, offset, max_bytes, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(PostgresPartitionLog, "read", committed_read)


@pytest.fixture
def open_storage(provider: str, provider_variant: str, tmp_path: Path, clock: Clock,
                 request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
                 ) -> Iterator[StorageFactory]:
    """Open a storage of the test's provider over tmp_path/data (postgres: a fresh schema of
    the session's PostgreSQL server); all are closed afterwards."""
    opened: list[BaseLogStorage] = []
    url = request.getfixturevalue("postgres").new_schema() if provider == "postgres" else None
    tiny = provider_variant == "postgres-tiny"
    if tiny:
        _read_committed_first(monkeypatch)

    def factory(config: BrokerConfig | None = None, **properties: object) -> BaseLogStorage:
        if tiny:
            properties.setdefault("akfak.postgres.cache.bytes.per.partition", 1)
        config = config or make_config(tmp_path / "data", **properties)
        storage: BaseLogStorage
        if url is not None:
            config.storage = url
            pg = PostgresLogStorage(config, clock=clock)
            # The shared suites read right after appending, as from the synchronous
            # providers; tests/log/test_postgres.py checks the committed high watermark.
            pg.committed_high_watermark = False
            storage = pg
        else:
            cls = MemoryLogStorage if provider == "memory" else DiskLogStorage
            storage = cls(config, clock=clock)
        storage.open()
        opened.append(storage)
        return storage

    yield factory
    for storage in opened:
        if not storage.closed:
            pytest_twisted.blockon(storage.close())
