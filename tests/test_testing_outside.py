"""akfak.testing as users meet it: pytest sessions with only the installed plugin (no conftest,
no pytest-twisted), and plain Python scripts, each in a subprocess of its own."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from akfak.testing import running_broker

ROOT = Path(__file__).resolve().parent.parent
USER_MODULE = ROOT / "tests" / "user_project" / "user_module.py"

#: What the user module's clients need: produce, consume, a consumer group, and InitProducerId
#: because kafka-python 3's KafkaProducer is idempotent by default.
CLIENT_APIS = {
    0: "Produce", 1: "Fetch", 2: "ListOffsets", 3: "Metadata", 8: "OffsetCommit", 9: "OffsetFetch",
    10: "FindCoordinator", 11: "JoinGroup", 12: "Heartbeat", 13: "LeaveGroup", 14: "SyncGroup",
    22: "InitProducerId",
}


def skip_unless_broker_has(apis: dict[int, str]) -> None:
    """Skip while the handlers these tests drive have not landed."""
    with running_broker() as broker:
        supported = broker.call(lambda: {key for key, _, _ in broker.broker.registry.api_versions()})
    missing = [name for key, name in apis.items() if key not in supported]
    if missing:
        pytest.skip(f"waiting for: {', '.join(missing)}")


def user_environment() -> dict[str, str]:
    # The outer pytest (and xdist) leave PYTEST_* variables behind; a user's shell has none.
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}


def run_pytest(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """pytest in `project` as a user runs it: only installed plugins, and not pytest-twisted,
    which a non-Twisted project would not have."""
    (project / "pytest.ini").write_text("[pytest]\n")  # stops pytest looking above for a config
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:twisted", "-q", *args],
        cwd=project, env=user_environment(), capture_output=True, text=True, timeout=240,
    )


def run_script(directory: Path, source: str) -> subprocess.CompletedProcess[str]:
    script = directory / "script.py"
    script.write_text(textwrap.dedent(source))
    return subprocess.run([sys.executable, str(script)], cwd=directory, env=user_environment(),
                          capture_output=True, text=True, timeout=120)


def summary(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"


FAILING_SESSION = '''
"""Brokers of failed tests must be gone (port, connections, directory) before the next test."""
import socket
import threading

import pytest

SEEN = []


def remember(broker):
    client = socket.create_connection(("127.0.0.1", broker.port))  # open when the test ends
    SEEN.append((broker.port, broker.data_dir, client))


def test_fails_with_memory_broker(akfak_broker):
    remember(akfak_broker)
    assert False, "deliberately failing"


@pytest.mark.akfak(storage="disk")
def test_fails_with_disk_broker(akfak_broker):
    remember(akfak_broker)
    raise RuntimeError("deliberately failing")


@pytest.fixture
def broken(akfak_broker):
    remember(akfak_broker)
    raise RuntimeError("deliberately failing setup")


def test_errors_in_setup(broken):
    pass


def test_earlier_brokers_are_gone():
    assert len(SEEN) == 3
    for port, data_dir, client in SEEN:
        client.settimeout(10)
        try:
            assert client.recv(1) == b"", "the broker kept the connection open"
        except ConnectionResetError:
            pass
        client.close()
        assert not data_dir.exists(), data_dir
        with socket.socket() as probe:  # no SO_REUSEADDR: any socket left on the port would fail it
            probe.bind(("127.0.0.1", port))
            probe.listen()
    assert not [t for t in threading.enumerate() if t.name == "akfak-embedded-broker"]
'''


def test_broker_of_a_failed_test_is_fully_stopped(tmp_path: Path) -> None:
    (tmp_path / "test_failing.py").write_text(FAILING_SESSION)
    result = run_pytest(tmp_path, "-rA", "test_failing.py")
    assert result.returncode == 1, summary(result)
    assert "PASSED test_failing.py::test_earlier_brokers_are_gone" in result.stdout, summary(result)
    assert "2 failed, 1 passed, 1 error" in result.stdout, summary(result)


PLAIN_SCRIPT = '''
import socket
import struct
import sys

from akfak.testing import EmbeddedBroker, running_broker

API_VERSIONS_V0 = struct.pack(">ihhih", 10, 18, 0, 1, -1)
with running_broker(storage="disk") as broker:
    with socket.create_connection(("127.0.0.1", broker.port)) as sock:
        sock.sendall(API_VERSIONS_V0)
        assert len(sock.recv(4)) == 4
    broker.create_topic("t")

forgotten = EmbeddedBroker(storage="disk").start()  # never stopped: the exit hook does it
print("forgotten", forgotten.data_dir)

# The brokers used private reactors: the program may still pick and run its own.
assert "twisted.internet.reactor" not in sys.modules, "the global reactor was installed"
from twisted.internet import asyncioreactor
asyncioreactor.install()
from twisted.internet import reactor
reactor.callWhenRunning(reactor.stop)
reactor.run()
print("reactor ran")
'''


def test_plain_script_then_its_own_choice_of_reactor(tmp_path: Path) -> None:
    result = run_script(tmp_path, PLAIN_SCRIPT)
    assert result.returncode == 0, summary(result)
    assert "reactor ran" in result.stdout
    forgotten = Path(result.stdout.split("forgotten ", 1)[1].split()[0])
    assert forgotten.name.startswith("akfak-test-") and not forgotten.exists()


def test_importing_the_plugin_imports_neither_twisted_nor_the_broker(tmp_path: Path) -> None:
    # pytest imports the plugin in every run where akfak is installed, Twisted suites included.
    result = run_script(tmp_path, '''
        import sys
        import akfak.testing.pytest_plugin
        print(sorted(m for m in sys.modules if m.startswith(("twisted", "akfak.")) and m != "akfak.testing"
                     and not m.startswith("akfak.testing.pytest_plugin")))
    ''')
    assert result.returncode == 0, summary(result)
    assert result.stdout.strip() == "[]", summary(result)


def test_user_project_with_three_clients(tmp_path: Path) -> None:
    skip_unless_broker_has(CLIENT_APIS)
    (tmp_path / "test_user_project.py").write_text(USER_MODULE.read_text())
    result = run_pytest(tmp_path, "test_user_project.py")
    assert result.returncode == 0, summary(result)
    assert "5 passed" in result.stdout, summary(result)


def test_user_project_in_parallel_workers(tmp_path: Path) -> None:
    skip_unless_broker_has(CLIENT_APIS)
    (tmp_path / "test_user_project.py").write_text(USER_MODULE.read_text())
    result = run_pytest(tmp_path, "-n", "2", "test_user_project.py")
    assert result.returncode == 0, summary(result)
    assert "5 passed" in result.stdout, summary(result)


def test_plain_script_with_confluent_kafka(tmp_path: Path) -> None:
    skip_unless_broker_has({0: "Produce", 1: "Fetch", 2: "ListOffsets", 3: "Metadata"})
    result = run_script(tmp_path, '''
        from confluent_kafka import Consumer, Producer, TopicPartition, OFFSET_BEGINNING

        import akfak.testing

        with akfak.testing.running_broker() as broker:
            broker.create_topic("greetings")
            producer = Producer({"bootstrap.servers": broker.bootstrap_servers})
            producer.produce("greetings", b"hello")
            assert producer.flush(10) == 0
            consumer = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": "script",
                                 "enable.auto.commit": False})
            consumer.assign([TopicPartition("greetings", 0, OFFSET_BEGINNING)])
            for _ in range(60):
                message = consumer.poll(0.5)
                if message is not None and message.error() is None:
                    break
            consumer.close()
            print("got", message.value().decode())
    ''')
    assert result.returncode == 0, summary(result)
    assert "got hello" in result.stdout


def test_two_brokers_do_not_share_topics(akfak_broker: object, akfak_broker_factory: object) -> None:
    skip_unless_broker_has({3: "Metadata"})
    from confluent_kafka.admin import AdminClient

    first, second = akfak_broker, akfak_broker_factory()  # type: ignore[operator]
    first.create_topic("only-in-first")  # type: ignore[attr-defined]

    def topics(broker: object) -> set[str]:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})  # type: ignore[attr-defined]
        return set(admin.list_topics(timeout=10).topics)

    assert "only-in-first" in topics(first)
    assert "only-in-first" not in topics(second)


TRIAL_MODULE = '''
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.trial.unittest import TestCase

from akfak.testing import start_broker


class BrokerTest(TestCase):
    async def setUp(self):
        self.broker = await start_broker(storage="disk")
        self.addCleanup(self.broker.stop_deferred)

    async def test_topic_and_connection(self):
        await self.broker.create_topic_deferred("events", partitions=2)
        self.assertEqual(self.broker.broker.image.topic("events").num_partitions, 2)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.broker.port)
        client = await connectProtocol(endpoint, Protocol())
        client.transport.loseConnection()
'''


def test_deferred_api_under_trial(tmp_path: Path) -> None:
    (tmp_path / "test_trial_broker.py").write_text(TRIAL_MODULE)
    result = subprocess.run(
        [sys.executable, "-m", "twisted.trial", "--temp-directory", str(tmp_path / "_trial_temp"),
         "test_trial_broker"],
        cwd=tmp_path, env={**user_environment(), "PYTHONPATH": str(tmp_path)},
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, summary(result)
    assert "PASSED (successes=1)" in result.stdout, summary(result)
