"""A real Apache Kafka broker (4.1.1, KRaft, one combined broker+controller node) for tests that
check a client program against Kafka itself before holding akfak to it.

Its classpath comes from tests/java/kafka-peer/pom.xml, resolved by Maven once into the local
repository (~/.m2) and cached like tests/java (tests/jvm.py). `start_kafka(tmp_path)` formats a
log directory under tmp_path and starts the broker on free 127.0.0.1 ports, in a few seconds.
Without java or mvn, or when Maven Central cannot be reached, it skips (under CI=true, a
missing JVM fails instead).
"""

from __future__ import annotations

import base64
import functools
import os
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests import jvm
from tests.brokers import free_port

PEER_DIR = jvm.JAVA_DIR / "kafka-peer"
START_TIMEOUT = 60.0
STARTED = "Kafka Server started"

SERVER_PROPERTIES = """\
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs={log_dir}
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=3
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
"""

LOG4J2 = """\
rootLogger.level=INFO
rootLogger.appenderRef.out.ref=out
appender.out.type=Console
appender.out.name=out
appender.out.layout.type=PatternLayout
appender.out.layout.pattern=[%d] %p %m (%c)%n
logger.state.name=state.change.logger
logger.state.level=WARN
"""


@dataclass
class KafkaPeer:
    """A running Kafka broker subprocess."""

    proc: subprocess.Popen[bytes]
    port: int
    directory: Path
    log_path: Path
    #: the ports of the listeners added by start_kafka(listeners=...), by name
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def bootstrap_for(self, listener: str) -> str:
        return f"127.0.0.1:{self.ports[listener]}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM (Kafka's clean shutdown), then SIGKILL after `timeout` seconds."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def _has_kraft_voters(log_dir: Path) -> bool:
    """Whether the metadata log starts with Kafka's KRaft control records (a --standalone
    format writes them); akfak's never does."""
    first = log_dir / "__cluster_metadata-0" / "00000000000000000000.log"
    return first.exists() and _first_batch_is_control(first.read_bytes())


def _first_batch_is_control(data: bytes) -> bool:
    # batch header: base offset 8, length 4, leader epoch 4, magic 1, crc 4, attributes 2
    return len(data) >= 23 and bool(int.from_bytes(data[21:23], "big") & 0x20)


@functools.cache
def _classpath() -> tuple[str, BaseException | None]:
    try:
        return os.pathsep.join(jvm.maven_classpath(PEER_DIR, ["generate-sources"])), None
    except (jvm.MavenUnreachable, pytest.fail.Exception) as e:
        return "", e


def kafka_classpath() -> str:
    """Kafka's classpath, resolved (once, cached) by Maven; skips when that cannot be done here."""
    jvm.require_jvm()
    classpath, error = _classpath()
    if isinstance(error, jvm.MavenUnreachable):
        pytest.skip(f"no Kafka broker to compare with: {error}")
    if error is not None:
        pytest.fail(str(error), pytrace=False)
    return classpath


def start_kafka(tmp_path: Path, log_dir: Path | None = None, *,
                properties: dict[str, str] | None = None,
                listeners: dict[str, str] | None = None,
                jvm_flags: list[str] | None = None) -> KafkaPeer:
    """Formats a KRaft log directory under tmp_path and starts Kafka on it; returns once the
    broker reports it has started (or fails with its log).

    With `log_dir`, Kafka opens that existing directory instead (one Kafka or akfak wrote).
    `properties` are added to (or override) SERVER_PROPERTIES.  `listeners` (name -> security
    protocol, e.g. {"SSL": "SSL"}) are more client listeners beside PLAINTEXT, each on a free
    port (KafkaPeer.ports), advertised as 127.0.0.1 (their settings, such as SASL's, go in
    `properties`).
    A directory without KRaft voter records (akfak writes none: kraft.version 0) needs the
    static `controller.quorum.voters`, as a Kafka cluster formatted without --standalone.
    `jvm_flags` come after the test suite's (tests/jvm.py: C1 only, for fast starts), e.g.
    `-XX:TieredStopAtLevel=4` for a benchmark."""
    classpath = kafka_classpath()
    tmp_path.mkdir(parents=True, exist_ok=True)
    port, controller_port = free_port(), free_port()
    while controller_port == port:
        controller_port = free_port()
    properties_file = tmp_path / "server.properties"
    text = SERVER_PROPERTIES.format(port=port, controller_port=controller_port,
                                    log_dir=log_dir or tmp_path / "kraft-logs")
    ports: dict[str, int] = {}
    for name in listeners or {}:
        ports[name] = free_port()
        while ports[name] in (port, controller_port) or list(ports.values()).count(ports[name]) > 1:
            ports[name] = free_port()
    if listeners:
        extra = {
            "listeners=": "".join(f"{n}://127.0.0.1:{ports[n]}," for n in listeners),
            "advertised.listeners=": "".join(f"{n}://127.0.0.1:{ports[n]}," for n in listeners),
            "listener.security.protocol.map=": "".join(f"{n}:{p}," for n, p in listeners.items()),
        }
        lines = []
        for line in text.splitlines():
            for key, added in extra.items():
                if line.startswith(key):
                    line = key + added + line[len(key):]
            lines.append(line)
        text = "\n".join(lines) + "\n"
    if log_dir is not None and not _has_kraft_voters(log_dir):
        text = text.replace("controller.quorum.bootstrap.servers=",
                            "controller.quorum.voters=1@")
    text += "".join(f"{key}={value}\n" for key, value in (properties or {}).items())
    properties_file.write_text(text)
    log4j = tmp_path / "log4j2.properties"
    log4j.write_text(LOG4J2)
    flags = ["-Xmx768m", f"-Dlog4j2.configurationFile={log4j}", "-Djava.awt.headless=true",
             *(jvm_flags or [])]
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    log_path = tmp_path / "kafka.log"
    with open(log_path, "ab") as out:
        if log_dir is None:
            format_command = jvm.java_command(classpath, "kafka.tools.StorageTool", "format",
                                              "--standalone", f"--cluster-id={cluster_id}",
                                              "-c", str(properties_file),
                                              flags=flags)
            formatted = subprocess.run(format_command, stdin=subprocess.DEVNULL, stdout=out,
                                       stderr=subprocess.STDOUT, timeout=60)
            if formatted.returncode != 0:
                raise RuntimeError(f"kafka-storage format failed:\n{log_path.read_text()[-4000:]}")
        out.write(b"\n---- kafka.Kafka ----\n")
        out.flush()
        proc = subprocess.Popen(jvm.java_command(classpath, "kafka.Kafka", str(properties_file), flags=flags),
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    peer = KafkaPeer(proc, port, tmp_path, log_path, ports)
    deadline = time.monotonic() + START_TIMEOUT
    while STARTED not in peer.log():
        if proc.poll() is not None or time.monotonic() > deadline:
            peer.stop(timeout=5)
            raise RuntimeError(f"Kafka did not start (exit status {proc.returncode}):\n{peer.log()[-6000:]}")
        time.sleep(0.1)
    return peer


CLUSTER_PROPERTIES = """\
process.roles=broker,controller
node.id={node}
controller.quorum.voters={voters}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs={log_dir}
offsets.topic.replication.factor={rf}
transaction.state.log.replication.factor={rf}
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor={rf}
group.initial.rebalance.delay.ms=0
"""


@dataclass
class KafkaCluster:
    """`n` Kafka 4.1.1 nodes, each a combined broker+controller of one static KRaft quorum."""

    procs: list[subprocess.Popen[bytes]]
    ports: list[int]
    logs: list[Path]

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def start_kafka_cluster(base: Path, n: int, properties: dict[str, str] | None = None,
                        timeout: float = 120.0) -> KafkaCluster:
    """Formats and starts `n` Kafka nodes under `base` (a JVM of -Xmx768m each, on free
    127.0.0.1 ports); returns once all of them report they have started. `properties` are
    added to every node's CLUSTER_PROPERTIES (a key given twice: the last one wins)."""
    classpath = kafka_classpath()
    ports = {node: (free_port(), free_port()) for node in range(1, n + 1)}
    voters = ",".join(f"{node}@127.0.0.1:{c}" for node, (_, c) in ports.items())
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    base.mkdir(parents=True, exist_ok=True)
    (base / "log4j2.properties").write_text(LOG4J2)  # INFO to stdout: the "started" line
    flags = ["-Xmx768m", "-Djava.awt.headless=true",
             f"-Dlog4j2.configurationFile={base / 'log4j2.properties'}"]
    cluster = KafkaCluster([], [port for port, _ in ports.values()], [])
    try:
        for node, (port, controller_port) in ports.items():
            home = base / f"kafka-{node}"
            home.mkdir()
            props = home / "server.properties"
            props.write_text(CLUSTER_PROPERTIES.format(
                node=node, voters=voters, port=port, controller_port=controller_port,
                log_dir=home / "logs", rf=min(n, 3))
                + "".join(f"{k}={v}\n" for k, v in (properties or {}).items()))
            log_path = home / "kafka.log"
            cluster.logs.append(log_path)
            with open(log_path, "ab") as out:
                subprocess.run(jvm.java_command(classpath, "kafka.tools.StorageTool", "format",
                                                f"--cluster-id={cluster_id}", "-c", str(props),
                                                flags=flags),
                               stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                               check=True, timeout=120)
                cluster.procs.append(subprocess.Popen(
                    jvm.java_command(classpath, "kafka.Kafka", str(props), flags=flags),
                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + timeout
        while not all(STARTED in p.read_text(errors="replace") for p in cluster.logs):
            if time.monotonic() > deadline or any(p.poll() is not None for p in cluster.procs):
                raise RuntimeError(f"Kafka did not start; logs in {base}")
            time.sleep(0.5)
    except BaseException:
        cluster.stop()
        raise
    return cluster
