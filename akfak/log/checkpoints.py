"""Kafka's small bookkeeping files in a log directory, read and written in Kafka's formats.

- `meta.properties` (log dir root): `version=1`, `cluster.id`, `node.id`,
  `directory.id`, as a Java properties file.
- `recovery-point-offset-checkpoint`, `log-start-offset-checkpoint`,
  `replication-offset-checkpoint`, `cleaner-offset-checkpoint` (log dir root): a
  version line `0`, a count line, then `topic partition offset` lines.
- `leader-epoch-checkpoint` (partition dir): `0`, count, `epoch startOffset` lines.
- `partition.metadata` (partition dir): `version: 0` / `topic_id: <base64url>`.

Writes go to a temporary file renamed over the old one, so a crash leaves
either version; `fsync=True` (used off the reactor thread) makes them durable.
"""

from __future__ import annotations

import base64
import contextlib
import os
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from twisted.logger import Logger

from akfak.properties import parse_properties

log = Logger()

RECOVERY_POINT_CHECKPOINT = "recovery-point-offset-checkpoint"
LOG_START_OFFSET_CHECKPOINT = "log-start-offset-checkpoint"
REPLICATION_OFFSET_CHECKPOINT = "replication-offset-checkpoint"
#: The log cleaner's first dirty offset per compacted log (Kafka's LogCleanerManager).
CLEANER_OFFSET_CHECKPOINT = "cleaner-offset-checkpoint"
LEADER_EPOCH_CHECKPOINT = "leader-epoch-checkpoint"
PARTITION_METADATA = "partition.metadata"
META_PROPERTIES = "meta.properties"
CLEAN_SHUTDOWN = ".kafka_cleanshutdown"

ZERO_UUID = uuid.UUID(int=0)
METADATA_TOPIC_ID = uuid.UUID(int=1)


# -- Kafka Uuid text form ------------------------------------------------------------------


def uuid_to_base64(value: uuid.UUID) -> str:
    """Kafka's `Uuid.toString()`: URL-safe base64 of the 16 bytes, without padding."""
    return base64.urlsafe_b64encode(value.bytes).decode("ascii").rstrip("=")


def base64_to_uuid(text: str) -> uuid.UUID:
    """Parse Kafka's Uuid text form."""
    raw = base64.urlsafe_b64decode(text.strip() + "==")
    if len(raw) != 16:
        raise ValueError(f"{text!r} is not a Kafka Uuid")
    return uuid.UUID(bytes=raw)


def random_kafka_uuid() -> uuid.UUID:
    """A random Uuid as Kafka makes them: never zero or the metadata topic's id, and
    never one whose text form starts with '-' (it would read as a command-line flag)."""
    while True:
        value = uuid.uuid4()
        if value not in (ZERO_UUID, METADATA_TOPIC_ID) and not uuid_to_base64(value).startswith("-"):
            return value


# -- atomic small-file writes --------------------------------------------------------------


def write_atomically(path: Path, text: str, *, fsync: bool = False) -> None:
    """Write `path` through a temporary file; on failure (disk full) the old file stays
    and the temporary one goes, so a failed write leaves nothing behind."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    if fsync:
        fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- offset checkpoints --------------------------------------------------------------------

TopicPartition = tuple[str, int]


def format_offset_checkpoint(entries: Mapping[TopicPartition, int]) -> str:
    lines = ["0", str(len(entries))]
    lines += [f"{topic} {partition} {offset}"
              for (topic, partition), offset in sorted(entries.items())]
    return "\n".join(lines) + "\n"


def write_offset_checkpoint(path: Path, entries: Mapping[TopicPartition, int], *,
                            fsync: bool = False) -> None:
    write_atomically(path, format_offset_checkpoint(entries), fsync=fsync)


def read_offset_checkpoint(path: Path) -> dict[TopicPartition, int]:
    """Entries of a `topic partition offset` checkpoint; {} (with a warning) if unreadable."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return {}
    try:
        if lines[0].strip() != "0":
            raise ValueError(f"unknown version {lines[0]!r}")
        count = int(lines[1])
        entries: dict[TopicPartition, int] = {}
        for line in lines[2 : 2 + count]:
            topic, partition, offset = line.split()
            entries[(topic, int(partition))] = int(offset)
        if len(entries) != count:
            raise ValueError(f"expected {count} entries, found {len(entries)}")
        return entries
    except (ValueError, IndexError) as e:
        log.warn("Ignoring malformed checkpoint {path}: {e}", path=str(path), e=e)
        return {}


def format_leader_epochs(entries: Iterable[tuple[int, int]]) -> str:
    items = list(entries)
    return "\n".join(["0", str(len(items)), *(f"{e} {o}" for e, o in items)]) + "\n"


def read_leader_epochs(path: Path) -> list[tuple[int, int]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    try:
        if lines[0].strip() != "0":
            raise ValueError(f"unknown version {lines[0]!r}")
        count = int(lines[1])
        entries = []
        for line in lines[2 : 2 + count]:
            epoch, offset = line.split()
            entries.append((int(epoch), int(offset)))
        return entries
    except (ValueError, IndexError) as e:
        log.warn("Ignoring malformed leader epoch checkpoint {path}: {e}", path=str(path), e=e)
        return []


# -- partition.metadata --------------------------------------------------------------------


def format_partition_metadata(topic_id: uuid.UUID) -> str:
    # Exactly what Kafka's PartitionMetadataFile writes (no trailing newline).
    return f"version: 0\ntopic_id: {uuid_to_base64(topic_id)}"


def read_partition_metadata(path: Path) -> uuid.UUID | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    if fields.get("version") != "0" or "topic_id" not in fields:
        log.warn("Ignoring malformed {path}", path=str(path))
        return None
    try:
        return base64_to_uuid(fields["topic_id"])
    except ValueError:
        log.warn("Ignoring malformed topic id in {path}", path=str(path))
        return None


# -- meta.properties -----------------------------------------------------------------------


@dataclass(frozen=True)
class MetaProperties:
    """A log directory's identity (KRaft `meta.properties`, version 1)."""

    cluster_id: str
    node_id: int
    directory_id: uuid.UUID
    version: int = 1

    def to_text(self) -> str:
        stamp = time.strftime("%a %b %d %H:%M:%S %Z %Y")
        props = {
            "cluster.id": self.cluster_id,
            "directory.id": uuid_to_base64(self.directory_id),
            "node.id": str(self.node_id),
            "version": str(self.version),
        }
        return "#\n#" + stamp + "\n" + "".join(f"{k}={v}\n" for k, v in sorted(props.items()))

    @classmethod
    def parse(cls, text: str) -> tuple[MetaProperties, bool]:
        """Parse meta.properties; the flag says a directory.id had to be made up."""
        props = parse_properties(text)
        if props.get("version", "").strip() != "1":
            raise ValueError(f"unsupported meta.properties version {props.get('version')!r}")
        directory = props.get("directory.id")
        missing = not directory
        return cls(
            cluster_id=props["cluster.id"],
            node_id=int(props["node.id"]),
            directory_id=random_kafka_uuid() if missing else base64_to_uuid(directory or ""),
        ), missing

    @classmethod
    def new(cls, node_id: int, cluster_id: str | None = None) -> MetaProperties:
        return cls(cluster_id=cluster_id or uuid_to_base64(random_kafka_uuid()), node_id=node_id,
                   directory_id=random_kafka_uuid())
