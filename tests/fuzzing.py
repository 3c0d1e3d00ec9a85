"""Mutation fuzzing of the broker's request path, shared by tests/test_fuzz.py (hypothesis,
bounded) and benchmarks/fuzz.py (the long run).

Seeds are valid requests of every API and version the handler registry holds, built
from kio's schemas (one element per array, plausible values).  A case is a seed with
a few mutations (bit flips, truncation, boundary values written over what may be a
length or count, junk inserted or overwritten, bytes deleted, an unknown tagged
field inserted).  The target is a broker subprocess, so an abort is seen as a death;
after each batch a fresh connection must get an ApiVersions answer within the bound.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib
import pkgutil
import random
import re
import socket
import struct
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import NoneType, UnionType
from typing import Any, get_args, get_origin

from kio.index import load_request_schema
from kio.static.primitive import i32Timedelta, i64Timedelta

from tests.brokers import BrokerProcess, start_process
from tests.recordbatch import make_batch
from tests.wire import encode_body, encode_request, is_flexible

TOPIC = "fuzz"
#: Broker overrides for a fuzz target: no waiting where a valid request would wait, and
#: few partitions per request (a mutated count would otherwise fill the disk).
BROKER_OPTIONS = ("-o", "group.initial.rebalance.delay.ms=0", "-o", "num.partitions=1",
                  "-o", "akfak.max.partitions.per.request=64", "-o", "akfak.max.partitions=5000")


def _partition_limits() -> bool:
    from akfak.config import DEFAULTS

    return "akfak.max.partitions" in DEFAULTS


#: CreateTopics and CreatePartitions create as many partitions as a (mutated) count asks,
#: on the reactor, without the partition limits; fuzzed only where those exist.
UNBOUNDED_APIS = frozenset() if _partition_limits() else frozenset({19, 37})
#: A fresh ApiVersions must be answered within this (see test_fuzz.py on the margin).
ANSWER_BOUND_S = 0.1
#: How long one case may go unanswered before its connection is given up (a mutated
#: request may legitimately wait: a long-poll Fetch, a JoinGroup).
CASE_TIMEOUT_S = 0.5

# -- seeds ---------------------------------------------------------------------------

_INTS = {  # field name -> a value that makes a seed a plausible request
    "acks": 1, "max_bytes": 1 << 20, "partition_max_bytes": 1 << 20, "num_partitions": 1,
    "replication_factor": 1, "count": 2, "session_timeout_ms": 10_000,
    "rebalance_timeout_ms": 10_000, "producer_id": -1, "producer_epoch": -1,
    "generation_id": -1, "session_epoch": -1, "current_leader_epoch": -1, "min_bytes": 1,
    "fetch_offset": 0, "log_start_offset": -1, "timestamp": -1, "max_num_offsets": 1,
    "leader_epoch": -1, "key_type": 0, "resource_type": 2, "config_operation": 0,
    "partition_index": 0, "index": 0, "replica_id": -1, "broker_epoch": -1,
    "response_partition_limit": 100, "coordinator_key_type": 0,
}
#: ACL request enums: ANY (1) in filters; a TOPIC, LITERAL, READ, ALLOW creation.
_ACL_ENUMS = {"resource_type_filter": 1, "pattern_type_filter": 1, "operation": 3,
              "permission_type": 3, "resource_type": 2, "resource_pattern_type": 3}
_STRINGS = {
    "client_software_name": "fuzz", "client_software_version": "1.0", "protocol_type": "consumer",
    "group_id": "fuzz-group", "key": "fuzz-group", "transactional_id": None, "member_id": "",
    "group_instance_id": None, "rack_id": None, "resource_name": TOPIC,
}


def handler_classes() -> list[Any]:
    import akfak.handlers as package

    classes = []
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        classes.extend(getattr(module, "HANDLERS", ()))
    return sorted(classes, key=lambda c: c.api_key)


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    if get_origin(annotation) is UnionType:
        args = [a for a in get_args(annotation) if a is not NoneType]
        return args[0], True
    return annotation, False


def _value(f: dataclasses.Field, api_key: int) -> Any:
    annotation, nullable = _unwrap(f.type)
    kafka_type = f.metadata.get("kafka_type")
    if get_origin(annotation) is tuple:
        element, _ = _unwrap(get_args(annotation)[0])
        if kafka_type is None:
            return (build_entity(element, api_key),)
        return (_primitive(kafka_type, element, f.name, api_key, False),)
    if kafka_type is None:
        return build_entity(annotation, api_key)
    return _primitive(kafka_type, annotation, f.name, api_key, nullable)


def _primitive(kafka_type: str, annotation: Any, name: str, api_key: int, nullable: bool) -> Any:
    if kafka_type == "string":
        if name in _STRINGS and (_STRINGS[name] is not None or nullable):
            return _STRINGS[name]
        # DeleteTopics must not delete the topic the other seeds use.
        return "fuzz-doomed" if api_key == 20 else TOPIC
    if kafka_type == "records":
        return make_batch([(b"k", b"v")])
    if kafka_type == "bytes":
        return b""
    if kafka_type == "bool":
        return False
    if kafka_type == "float64":
        return annotation(1.0)
    if kafka_type == "uuid":
        return None if nullable else uuid.UUID(int=0)
    if kafka_type == "timedelta_i32":
        return i32Timedelta.parse(datetime.timedelta(0))
    if kafka_type == "timedelta_i64":
        return i64Timedelta.parse(datetime.timedelta(0))
    if kafka_type == "datetime_i64":
        return datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    if api_key in (29, 30, 31) and name in _ACL_ENUMS:
        return annotation(_ACL_ENUMS[name])  # UNKNOWN (0) would close the connection
    return annotation(_INTS.get(name, 0))


def build_entity(cls: type, api_key: int) -> Any:
    values = {}
    for f in dataclasses.fields(cls):
        if "tag" in f.metadata:
            continue  # tagged fields keep their defaults
        values[f.name] = _value(f, api_key)
    return cls(**values)


@dataclass(frozen=True)
class Seed:
    api_key: int
    version: int
    payload: bytes  # header and body, without the frame length
    body_offset: int


def seeds(*, all_apis: bool = False) -> list[Seed]:
    """One valid request for each API and version the handler registry holds (but those
    of UNBOUNDED_APIS unless `all_apis`)."""
    out = []
    for handler in handler_classes():
        if handler.api_key in UNBOUNDED_APIS and not all_apis:
            continue
        kio_min = getattr(handler, "kio_min_version", handler.min_version)
        for version in range(handler.min_version, handler.max_version + 1):
            schema = load_request_schema(handler.api_key, max(version, kio_min))
            body = encode_body(build_entity(schema, handler.api_key))
            if version < kio_min:  # Produce v0-v2: v3 without the (null) transactional id
                body = body[2:]
            frame = encode_request(handler.api_key, version, 1, body, client_id="fuzz")
            payload = frame[4:]
            out.append(Seed(handler.api_key, version, payload, len(payload) - len(body)))
    return out


# -- mutations -----------------------------------------------------------------------

#: Values written over what may be a length or a count (int8/16/32 and varints).
BOUNDARIES: tuple[bytes, ...] = (
    b"\x00", b"\x01", b"\x7f", b"\x80", b"\xff",
    b"\x00\x00", b"\x7f\xff", b"\x80\x00", b"\xff\xff", b"\xff\xfe",
    b"\x00\x00\x00\x00", b"\x7f\xff\xff\xff", b"\x80\x00\x00\x00", b"\xff\xff\xff\xff",
    b"\x00\x01\x00\x00", b"\x06\x7f\xbf\xf0",  # 27917287408 / 4: a ~108 M count
    b"\xff\xff\xff\xff\x0f", b"\xff\xff\xff\x7f", b"\x80\x80\x80\x80\x80",  # varints
)
KINDS = ("flip", "truncate", "boundary", "overwrite", "insert", "delete", "tag")


@dataclass(frozen=True)
class Mutation:
    kind: str
    position: int  # taken modulo the payload length
    value: int  # bit, boundary index, junk seed or length, as the kind needs


def mutate(seed: Seed, mutations: list[Mutation]) -> bytes:
    """The frame (length prefix included) of `seed` after `mutations`."""
    data = bytearray(seed.payload)
    for m in mutations:
        n = len(data)
        if n == 0:
            break
        # Mostly the body; a position below the body offset mutates the header.
        pos = m.position % n
        if m.kind == "flip":
            data[pos] ^= 1 << (m.value % 8)
        elif m.kind == "truncate":
            del data[pos:]
        elif m.kind == "boundary":
            value = BOUNDARIES[m.value % len(BOUNDARIES)]
            data[pos:pos + len(value)] = value
        elif m.kind == "overwrite":
            junk = random.Random(m.value).randbytes(1 + m.value % 8)
            data[pos:pos + len(junk)] = junk
        elif m.kind == "insert":
            data[pos:pos] = random.Random(m.value).randbytes(1 + m.value % 16)
        elif m.kind == "delete":
            del data[pos:pos + 1 + m.value % 8]
        elif m.kind == "tag":
            # An unknown tagged field (tag 42..) spliced where a tag count may be.
            tag = bytes([1, 42 + m.value % 64, 2, 0xAB, 0xCD])
            data[pos:pos + 1] = tag
    return struct.pack(">i", len(data)) + bytes(data)


def random_mutations(rng: random.Random) -> list[Mutation]:
    return [Mutation(rng.choice(KINDS), rng.randrange(1 << 16), rng.randrange(1 << 16))
            for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 5)))]


# -- the target ----------------------------------------------------------------------

_PROBE = encode_request(18, 0, 0x5EED, b"", client_id="probe")
_BAD_LOG = re.compile(r"Traceback|\[[\w.]+#critical\]|#error\]|Unhandled|MemoryError")


class Failures:
    """Distinct failures: how often each was seen and one case that caused it."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, str] = {}

    def record(self, failure: str, example: str) -> None:
        self.counts[failure] += 1
        self.examples.setdefault(failure, example)

    def update(self, other: Failures) -> None:
        for failure, count in other.counts.items():
            self.counts[failure] += count
            self.examples.setdefault(failure, other.examples[failure])

    def most_common(self) -> list[tuple[str, tuple[int, str]]]:
        return [(f, (n, self.examples[f])) for f, n in self.counts.most_common()]

    def __len__(self) -> int:
        return len(self.counts)


@dataclass
class Outcome:
    cases: int = 0
    closed: int = 0  # connections the broker closed (malformed requests)
    timeouts: int = 0  # cases still unanswered after CASE_TIMEOUT_S
    deaths: int = 0
    stalls: int = 0
    failures: Failures = field(default_factory=Failures)

    def add(self, other: Outcome) -> None:
        for name in ("cases", "closed", "timeouts", "deaths", "stalls"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.failures.update(other.failures)


class Target:
    """A broker subprocess and a connection to it that is reopened when closed."""

    def __init__(self, data_dir: Path, *extra: str):
        self.data_dir = data_dir
        self.extra = (*BROKER_OPTIONS, *extra)
        self.broker: BrokerProcess = self._start()
        self.sock: socket.socket | None = None
        self._log_offset = 0

    def _start(self) -> BrokerProcess:
        # a restart after a death or stall may be slow on a loaded machine (the long run is niced)
        broker = start_process(self.data_dir, *self.extra, start_timeout=120)
        with socket.create_connection(("127.0.0.1", broker.port)) as sock:
            # the topic the seeds name
            from tests.requests import build

            schema = load_request_schema(19, 7)
            module = importlib.import_module(schema.__module__)
            topic = build(module.CreatableTopic, name=TOPIC, num_partitions=1,
                          replication_factor=1, assignments=(), configs=())
            request = build(schema, topics=(topic,), timeout=i32Timedelta.parse(
                datetime.timedelta(seconds=5)), validate_only=False)
            sock.sendall(encode_request(19, 7, 1, encode_body(request)))
            _read_frame(sock)
        return broker

    def close(self) -> None:
        self._disconnect()
        if self.broker.proc.poll() is None:
            self.broker.stop()

    def _disconnect(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def run(self, frames: list[bytes], labels: list[str]) -> Outcome:
        """Send each frame (a probe after it on the same connection), then check that the
        broker is alive, answers a fresh connection in time and logged nothing bad."""
        outcome = Outcome()
        for frame, label in zip(frames, labels, strict=True):
            outcome.cases += 1
            result = self._case(frame)
            if result == "closed":
                outcome.closed += 1
            elif result == "timeout":
                outcome.timeouts += 1
            if self.broker.proc.poll() is not None:
                outcome.deaths += 1
                outcome.failures.record(f"death (exit {self.broker.proc.returncode})", label)
                self._note_log(outcome, label)
                self._disconnect()
                self.broker = self._start()
                self._log_offset = 0
        latencies = [self.answer_latency() for _ in range(3)]
        if min(latencies) > ANSWER_BOUND_S:
            outcome.stalls += 1
            outcome.failures.record("stall", f"{min(latencies) * 1000:.0f} ms after {labels[-1]}")
        self._note_log(outcome, labels[-1])
        if outcome.stalls:  # a wedged broker would make every later case time out
            self._disconnect()
            self.broker.kill()
            self.broker = self._start()
            self._log_offset = 0
        return outcome

    def _case(self, frame: bytes) -> str:
        if self.sock is None:
            self.sock = socket.create_connection(("127.0.0.1", self.broker.port))
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock = self.sock
        sock.settimeout(CASE_TIMEOUT_S)
        try:
            sock.sendall(frame + _PROBE)
            while True:
                response = _read_frame(sock)
                if response is None:
                    self._disconnect()
                    return "closed"
                if response[:4] == b"\x00\x00\x5e\xed":
                    return "answered"
        except TimeoutError:
            self._disconnect()
            return "timeout"
        except OSError:
            self._disconnect()
            return "closed"

    def answer_latency(self) -> float:
        """Seconds from connecting to an ApiVersions answer on a fresh connection."""
        start = time.perf_counter()
        try:
            with socket.create_connection(("127.0.0.1", self.broker.port), timeout=5) as sock:
                sock.sendall(_PROBE)
                if _read_frame(sock) is None:
                    return float("inf")
        except OSError:
            return float("inf")
        return time.perf_counter() - start

    def _note_log(self, outcome: Outcome, label: str) -> None:
        text = self.broker.log()
        new, self._log_offset = text[self._log_offset:], len(text)
        lines = new.splitlines()
        i = 0
        while i < len(lines):
            line, i = lines[i], i + 1
            if not _BAD_LOG.search(line):
                continue
            # A failure's traceback follows, indented: its last line names the exception.
            exception = ""
            while i < len(lines) and lines[i][:1] in ("\t", " "):
                if lines[i].strip():
                    exception = lines[i].strip()
                i += 1
            outcome.failures.record(_normalise(f"{line} {exception}"), label)


def _normalise(line: str) -> str:
    """A log line without its timestamp and numbers, so that repeats count as one."""
    line = re.sub(r"^\S+ ", "", line)
    line = re.sub(r"\d+\.\d+\.\d+\.\d+:\d+", "PEER", line)
    return re.sub(r"\d{3,}", "N", line)[:240]


def _read_frame(sock: socket.socket) -> bytes | None:
    head = _recv_exactly(sock, 4)
    if head is None:
        return None
    (size,) = struct.unpack(">i", head)
    return _recv_exactly(sock, size)


def _recv_exactly(sock: socket.socket, n: int) -> bytes | None:
    chunks = []
    while n:
        chunk = sock.recv(n)
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def label(seed: Seed) -> str:
    return f"API {seed.api_key} v{seed.version}"


__all__ = ["ANSWER_BOUND_S", "Mutation", "Outcome", "Seed", "Target", "is_flexible", "label",
           "mutate", "random_mutations", "seeds"]
