"""Share groups in `__consumer_offsets`, as Kafka 4.1's group coordinator keeps them.

Keys and values follow apache/kafka `group-coordinator/src/main/resources/common/message/
ShareGroup*.json`: the key an int16 record type and the group id (and member id), the value an
int16 version (0) and flexible fields.  Types: 10 member subscription (rack, client id, client
host, subscribed topics), 11 group epoch (and metadata hash: akfak writes 0, which Kafka
recomputes, bumping the epoch once), 12 target assignment epoch, 13 a member's target
assignment, 14 a member's current assignment (epoch, previous epoch, state, partitions), 15 the
share-partitions initialized (and initializing, deleting) in the share coordinator.  A tombstone
is a null value.  The classic coordinator skips these types; `ShareGroupLog` writes them to the
group's partition and replays them at start with its own loader over the same topic.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any

from kio.schema.errors import ErrorCode
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.logger import Logger

from akfak.coordinator.codec import Reader, RecordFormatError, Writer, uvarint
from akfak.coordinator.runtime import PartitionLoader
from akfak.coordinator.topic import ICoordinatorTopic
from akfak.groups.records import partition_for
from akfak.log.batch import BatchHeader
from akfak.log.records import encode_batch, iter_records

log = Logger()

MEMBER_METADATA, GROUP_METADATA, TARGET_METADATA, TARGET_MEMBER, CURRENT_MEMBER, STATE_METADATA = (
    10, 11, 12, 13, 14, 15)
_WITH_MEMBER = (MEMBER_METADATA, TARGET_MEMBER, CURRENT_MEMBER)
MEMBER_STABLE = 0

#: topic id -> partitions
Partitions = dict[Hashable, set[int]]


@dataclass(frozen=True, slots=True)
class Record:
    kind: int
    group_id: str
    member_id: str | None
    #: the decoded value (a tuple per kind), None for a tombstone
    value: Any


# -- encoding -------------------------------------------------------------------------------


def _string(value: str | None) -> bytes:
    if value is None:
        return b"\x00"
    data = value.encode()
    return uvarint(len(data) + 1) + data


def _partitions(assigned: Partitions) -> bytes:
    out = bytearray(uvarint(len(assigned) + 1))
    for topic_id, parts in assigned.items():
        out += topic_id.bytes if isinstance(topic_id, uuid.UUID) else bytes(16)
        out += uvarint(len(parts) + 1) + b"".join(p.to_bytes(4, "big") for p in sorted(parts))
        out.append(0)
    return bytes(out)


def encode_key(kind: int, group_id: str, member_id: str | None = None) -> bytes:
    w = Writer()
    w.int16(kind)
    w.string(group_id)
    if kind in _WITH_MEMBER:
        w.string(member_id or "")
    return w.getvalue()


def member_metadata(rack: str | None, client_id: str, client_host: str,
                    topics: Iterable[str]) -> bytes:
    topics = list(topics)
    return (b"\x00\x00" + _string(rack) + _string(client_id) + _string(client_host)
            + uvarint(len(topics) + 1) + b"".join(_string(t) for t in topics) + b"\x00")


def group_metadata(epoch: int, metadata_hash: int = 0) -> bytes:
    return b"\x00\x00" + epoch.to_bytes(4, "big", signed=True) \
        + metadata_hash.to_bytes(8, "big", signed=True) + b"\x00"


def target_metadata(assignment_epoch: int) -> bytes:
    return b"\x00\x00" + assignment_epoch.to_bytes(4, "big", signed=True) + b"\x00"


def target_member(assigned: Partitions) -> bytes:
    return b"\x00\x00" + _partitions(assigned) + b"\x00"


def current_member(epoch: int, previous_epoch: int, assigned: Partitions) -> bytes:
    return (b"\x00\x00" + epoch.to_bytes(4, "big", signed=True)
            + previous_epoch.to_bytes(4, "big", signed=True) + bytes([MEMBER_STABLE])
            + _partitions(assigned) + b"\x00")


def state_metadata(initialized: dict[Hashable, tuple[str, set[int]]]) -> bytes:
    """Initialized topics (topic id -> (name, partitions)); none initializing or deleting."""
    out = bytearray(b"\x00\x00\x01")  # no initializing topics
    out += uvarint(len(initialized) + 1)
    for topic_id, (name, parts) in initialized.items():
        out += topic_id.bytes if isinstance(topic_id, uuid.UUID) else bytes(16)
        out += _string(name)
        out += uvarint(len(parts) + 1) + b"".join(p.to_bytes(4, "big") for p in sorted(parts))
        out.append(0)
    out += b"\x01\x00"  # no deleting topics; tagged fields
    return bytes(out)


# -- decoding -------------------------------------------------------------------------------


def _read_partitions(r: Reader) -> Partitions:
    out: Partitions = {}
    for _ in range(r.array_length()):
        topic_id = uuid.UUID(bytes=r._take(16))
        out[topic_id] = {r.int32() for _ in range(r.array_length())}
        r.tagged_fields()
    return out


def decode(key: bytes, value: bytes | None) -> Record | None:
    """A share-group record, or None for the other types of `__consumer_offsets`."""
    r = Reader(key)
    kind = r.int16()
    if kind not in range(MEMBER_METADATA, STATE_METADATA + 1):
        return None
    group_id = r.string()
    member_id = r.string() if kind in _WITH_MEMBER else None
    if value is None:
        return Record(kind, group_id, member_id, None)
    v = Reader(value, flexible=True)
    v.int16()
    decoded: Any
    if kind == MEMBER_METADATA:
        decoded = (v.nullable_string(), v.string(), v.string(),
                   [v.string() for _ in range(v.array_length())])
    elif kind == GROUP_METADATA:
        decoded = (v.int32(), v.int64())
    elif kind == TARGET_METADATA:
        decoded = v.int32()
    elif kind == TARGET_MEMBER:
        decoded = _read_partitions(v)
    elif kind == CURRENT_MEMBER:
        decoded = (v.int32(), v.int32(), v.int8(), _read_partitions(v))
    else:
        initialized: dict[Hashable, tuple[str, set[int]]] = {}
        for section in range(2):
            for _ in range(v.array_length()):
                topic_id = uuid.UUID(bytes=v._take(16))
                name = v.string()
                parts = {v.int32() for _ in range(v.array_length())}
                v.tagged_fields()
                if section == 1:
                    initialized[topic_id] = (name, parts)
        decoded = initialized
    return Record(kind, group_id, member_id, decoded)


# -- writing and loading --------------------------------------------------------------------


class ShareGroupLog:
    """Writes share-group records to `__consumer_offsets` and replays them at start.  In a
    cluster it owns the partitions this broker leads, as the group coordinator does (the
    same topic, so the same placement): `on_election` replays one, `on_resignation` forgets
    its groups (`forget`), and groups of the others are NOT_COORDINATOR (`status`)."""

    LOADING = "share groups"

    def __init__(self, clock: Any, store: ICoordinatorTopic, ensure_topic: Callable[[], Any],
                 num_partitions: Callable[[], int], replay: Callable[[Record], None],
                 forget: Callable[[int], None] = lambda _p: None,
                 partition_loaded: Callable[[int], None] = lambda _p: None) -> None:
        self.clock = clock
        self.store = store
        self.ensure_topic = ensure_topic
        self.num_partitions = num_partitions
        self.replay = replay
        self.forget = forget
        self.partition_loaded = partition_loaded
        self.active = False
        #: (a cluster) the partitions this broker leads; None for all (one broker)
        self.owned: set[int] | None = None
        self.loader = PartitionLoader(clock, store, self._replay_batch, self._partition_loaded,
                                      lambda: self.active)
        self.loaded: Deferred[None] = Deferred()

    def start(self, *, clustered: bool = False) -> None:
        self.active = True
        if clustered:
            self.owned = set()
        existing = self.store.num_partitions()
        if clustered or not existing:
            self.loaded.callback(None)
            return
        self.loader.start(existing)

    def _partition_loaded(self, partition: int) -> None:
        if self.owned is not None:
            self.partition_loaded(partition)
        elif not self.loader.loading and not self.loaded.called:
            self.loaded.callback(None)

    def on_election(self, partition: int) -> None:
        if self.owned is None:
            return
        self.forget(partition)
        self.owned.add(partition)
        self.loader.load(partition)

    def on_resignation(self, partition: int) -> None:
        if self.owned is None or partition not in self.owned:
            return
        self.owned.discard(partition)
        self.loader.unload(partition)
        self.forget(partition)

    def stop(self) -> None:
        self.active = False

    def status(self, group_id: str) -> ErrorCode | None:
        """NOT_COORDINATOR (another broker's), COORDINATOR_LOAD_IN_PROGRESS, or None."""
        existing = self.store.num_partitions()
        if not existing:
            return None
        partition = partition_for(group_id, existing)
        if self.owned is not None and partition not in self.owned:
            return ErrorCode.not_coordinator
        if partition in self.loader.loading:
            return ErrorCode.coordinator_load_in_progress
        return None

    def _replay_batch(self, partition: int, header: BatchHeader, batch: memoryview) -> None:
        if header.is_control or header.is_transactional:
            return
        for record in iter_records(batch):
            if record.key is None:
                continue
            try:
                decoded = decode(record.key, record.value)
            except (RecordFormatError, ValueError) as e:
                log.warn("Skipping an unreadable share-group record in __consumer_offsets-{p}: "
                         "{e}", p=partition, e=e)
                continue
            if decoded is not None:
                self.replay(decoded)

    def append(self, group_id: str, entries: list[tuple[bytes, bytes | None]]) -> Deferred[None]:
        """Write (key, value) records to the group's partition; fires once they are in the log."""
        if not entries:
            return succeed(None)
        batch = encode_batch(entries, timestamp=int(self.clock.seconds() * 1000))

        def write(_: Any) -> Any:
            partition = partition_for(group_id, self.store.num_partitions() or self.num_partitions())
            return maybeDeferred(self.store.append, partition, batch,
                                 int(self.clock.seconds() * 1000))

        return maybeDeferred(self.ensure_topic).addCallback(write).addCallback(lambda _: None)
