"""KRaft metadata records: the values stored in `__cluster_metadata-0`.

Each record value is: frame version (uvarint, 1), record type (uvarint, the
schema's apiKey), record version (uvarint), then the fields in Kafka's flexible
encoding (compact strings and arrays, tagged fields at the end of every
struct).  The schemas follow apache/kafka
`metadata/src/main/resources/common/metadata/*.json`; each record class below
lists its fields with the versions they exist in, and one generic codec
(metadata_codec.py) reads and writes them.  Types akfak does not model decode to
`UnknownRecord` and are skipped on replay.
"""

from __future__ import annotations

import io
import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from kio.serial.writers import write_unsigned_varint

from akfak import features
from akfak.log.metadata_codec import (
    BOOL,
    BYTES,
    FLOAT64,
    INT8,
    INT16,
    INT32,
    INT32_ARRAY,
    INT64,
    STRING,
    UINT16,
    UUID,
    UUID_ARRAY,
    Field,
    MetadataRecord,
    MetadataRecordError,
    Struct,
    _struct_array,
    _uvarint,
    decode_struct,
    encode_struct,
)

FRAME_VERSION = 1
ZERO_UUID = uuid.UUID(int=0)
#: The topic id Kafka gives `__cluster_metadata` (Uuid.METADATA_TOPIC_ID).
METADATA_TOPIC_ID = uuid.UUID(int=1)


# -- the records ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BrokerEndpoint(Struct):
    name: str
    host: str
    port: int
    security_protocol: int = 0  # PLAINTEXT
    FIELDS: ClassVar = (Field("name", STRING), Field("host", STRING), Field("port", UINT16),
                        Field("security_protocol", INT16))


@dataclass(frozen=True)
class BrokerFeature(Struct):
    name: str
    min_supported_version: int
    max_supported_version: int
    FIELDS: ClassVar = (Field("name", STRING), Field("min_supported_version", INT16),
                        Field("max_supported_version", INT16))


@dataclass(frozen=True)
class RegisterBrokerRecord(MetadataRecord):
    broker_id: int
    incarnation_id: uuid.UUID
    broker_epoch: int
    end_points: list[BrokerEndpoint] = field(default_factory=list)
    features: list[BrokerFeature] = field(default_factory=list)
    rack: str | None = None
    fenced: bool = True
    in_controlled_shutdown: bool = False
    is_migrating_zk_broker: bool = False
    log_dirs: list[uuid.UUID] = field(default_factory=list)
    API_KEY: ClassVar = 0
    WRITE_VERSION: ClassVar = 3
    MAX_VERSION: ClassVar = 3

    @classmethod
    def version_at(cls, metadata_version: int) -> int:
        return features.register_broker_record_version(metadata_version)

    FIELDS: ClassVar = (
        Field("broker_id", INT32),
        Field("is_migrating_zk_broker", BOOL, min_version=2),
        Field("incarnation_id", UUID),
        Field("broker_epoch", INT64),
        Field("end_points", _struct_array(BrokerEndpoint)),
        Field("features", _struct_array(BrokerFeature)),
        Field("rack", STRING),
        Field("fenced", BOOL),
        Field("in_controlled_shutdown", BOOL, min_version=1),
        Field("log_dirs", UUID_ARRAY, min_version=3, tag=0),
    )


@dataclass(frozen=True)
class UnregisterBrokerRecord(MetadataRecord):
    broker_id: int
    broker_epoch: int
    API_KEY: ClassVar = 1
    FIELDS: ClassVar = (Field("broker_id", INT32), Field("broker_epoch", INT64))


@dataclass(frozen=True)
class TopicRecord(MetadataRecord):
    name: str
    topic_id: uuid.UUID
    API_KEY: ClassVar = 2
    FIELDS: ClassVar = (Field("name", STRING), Field("topic_id", UUID))


@dataclass(frozen=True)
class PartitionRecord(MetadataRecord):
    partition_id: int
    topic_id: uuid.UUID
    replicas: list[int] = field(default_factory=list)
    isr: list[int] = field(default_factory=list)
    removing_replicas: list[int] = field(default_factory=list)
    adding_replicas: list[int] = field(default_factory=list)
    leader: int = -1
    leader_recovery_state: int = 0
    leader_epoch: int = -1
    partition_epoch: int = -1
    directories: list[uuid.UUID] = field(default_factory=list)
    eligible_leader_replicas: list[int] | None = None
    last_known_elr: list[int] | None = None
    API_KEY: ClassVar = 3
    WRITE_VERSION: ClassVar = 1
    MAX_VERSION: ClassVar = 2

    @classmethod
    def version_at(cls, metadata_version: int) -> int:
        return features.partition_record_version(metadata_version)

    FIELDS: ClassVar = (
        Field("partition_id", INT32),
        Field("topic_id", UUID),
        Field("replicas", INT32_ARRAY),
        Field("isr", INT32_ARRAY),
        Field("removing_replicas", INT32_ARRAY),
        Field("adding_replicas", INT32_ARRAY),
        Field("leader", INT32),
        Field("leader_recovery_state", INT8, tag=0),
        Field("leader_epoch", INT32),
        Field("partition_epoch", INT32),
        Field("directories", UUID_ARRAY, min_version=1),
        Field("eligible_leader_replicas", INT32_ARRAY, min_version=2, tag=1),
        Field("last_known_elr", INT32_ARRAY, min_version=2, tag=2),
    )


#: ConfigRecord resource types (Kafka's ConfigResource.Type ids).
RESOURCE_TOPIC = 2
RESOURCE_BROKER = 4
RESOURCE_CLIENT_METRICS = 16
RESOURCE_GROUP = 32


@dataclass(frozen=True)
class ConfigRecord(MetadataRecord):
    resource_type: int
    resource_name: str
    name: str
    value: str | None  # None deletes the key
    API_KEY: ClassVar = 4
    FIELDS: ClassVar = (Field("resource_type", INT8), Field("resource_name", STRING),
                        Field("name", STRING), Field("value", STRING))


@dataclass(frozen=True)
class PartitionChangeRecord(MetadataRecord):
    """Changes to a partition; None (or -2 for leader, -1 for recovery state) means unchanged."""

    partition_id: int
    topic_id: uuid.UUID
    isr: list[int] | None = None
    leader: int = -2
    replicas: list[int] | None = None
    removing_replicas: list[int] | None = None
    adding_replicas: list[int] | None = None
    leader_recovery_state: int = -1
    directories: list[uuid.UUID] | None = None
    eligible_leader_replicas: list[int] | None = None
    last_known_elr: list[int] | None = None
    API_KEY: ClassVar = 5
    WRITE_VERSION: ClassVar = 1
    MAX_VERSION: ClassVar = 2

    @classmethod
    def version_at(cls, metadata_version: int) -> int:
        return features.partition_record_version(metadata_version)

    FIELDS: ClassVar = (
        Field("partition_id", INT32),
        Field("topic_id", UUID),
        Field("isr", INT32_ARRAY, tag=0),
        Field("leader", INT32, tag=1),
        Field("replicas", INT32_ARRAY, tag=2),
        Field("removing_replicas", INT32_ARRAY, tag=3),
        Field("adding_replicas", INT32_ARRAY, tag=4),
        Field("leader_recovery_state", INT8, tag=5),
        Field("eligible_leader_replicas", INT32_ARRAY, min_version=2, tag=6),
        Field("last_known_elr", INT32_ARRAY, min_version=2, tag=7),
        Field("directories", UUID_ARRAY, min_version=1, tag=8),
    )


@dataclass(frozen=True)
class RemoveTopicRecord(MetadataRecord):
    topic_id: uuid.UUID
    API_KEY: ClassVar = 9
    FIELDS: ClassVar = (Field("topic_id", UUID),)


@dataclass(frozen=True)
class FeatureLevelRecord(MetadataRecord):
    name: str
    feature_level: int
    API_KEY: ClassVar = 12
    FIELDS: ClassVar = (Field("name", STRING), Field("feature_level", INT16))


@dataclass(frozen=True)
class ProducerIdsRecord(MetadataRecord):
    broker_id: int
    broker_epoch: int
    next_producer_id: int
    API_KEY: ClassVar = 15
    FIELDS: ClassVar = (Field("broker_id", INT32), Field("broker_epoch", INT64),
                        Field("next_producer_id", INT64))


@dataclass(frozen=True)
class AccessControlEntryRecord(MetadataRecord):
    id: uuid.UUID
    resource_type: int
    resource_name: str
    pattern_type: int
    principal: str
    host: str
    operation: int
    permission_type: int
    API_KEY: ClassVar = 18
    FIELDS: ClassVar = (Field("id", UUID), Field("resource_type", INT8),
                        Field("resource_name", STRING), Field("pattern_type", INT8),
                        Field("principal", STRING), Field("host", STRING),
                        Field("operation", INT8), Field("permission_type", INT8))


@dataclass(frozen=True)
class RemoveAccessControlEntryRecord(MetadataRecord):
    id: uuid.UUID
    API_KEY: ClassVar = 19
    FIELDS: ClassVar = (Field("id", UUID),)


@dataclass(frozen=True)
class UserScramCredentialRecord(MetadataRecord):
    name: str
    mechanism: int
    salt: bytes
    stored_key: bytes
    server_key: bytes
    iterations: int
    API_KEY: ClassVar = 11
    FIELDS: ClassVar = (Field("name", STRING), Field("mechanism", INT8), Field("salt", BYTES),
                        Field("stored_key", BYTES), Field("server_key", BYTES),
                        Field("iterations", INT32))

    def __repr__(self) -> str:  # the keys are secrets
        return f"UserScramCredentialRecord(name={self.name!r}, mechanism={self.mechanism})"


@dataclass(frozen=True)
class RemoveUserScramCredentialRecord(MetadataRecord):
    name: str
    mechanism: int
    API_KEY: ClassVar = 22
    FIELDS: ClassVar = (Field("name", STRING), Field("mechanism", INT8))


@dataclass(frozen=True)
class QuotaEntityData(Struct):
    entity_type: str
    entity_name: str | None  # None: the default entity of that type
    FIELDS: ClassVar = (Field("entity_type", STRING), Field("entity_name", STRING))


@dataclass(frozen=True)
class ClientQuotaRecord(MetadataRecord):
    entity: list[QuotaEntityData]
    key: str
    value: float = 0.0
    remove: bool = False
    API_KEY: ClassVar = 14
    FIELDS: ClassVar = (Field("entity", _struct_array(QuotaEntityData)), Field("key", STRING),
                        Field("value", FLOAT64), Field("remove", BOOL))


@dataclass(frozen=True)
class BrokerRegistrationChangeRecord(MetadataRecord):
    broker_id: int
    broker_epoch: int
    fenced: int = 0  # -1 unfenced, 0 no change, 1 fenced
    in_controlled_shutdown: int = 0
    log_dirs: list[uuid.UUID] | None = None
    API_KEY: ClassVar = 17
    MAX_VERSION: ClassVar = 2
    FIELDS: ClassVar = (
        Field("broker_id", INT32),
        Field("broker_epoch", INT64),
        Field("fenced", INT8, tag=0),
        Field("in_controlled_shutdown", INT8, min_version=1, tag=1),
        Field("log_dirs", UUID_ARRAY, min_version=2, tag=2),
    )


@dataclass(frozen=True)
class UnknownRecord:
    """A record type (or version) akfak does not model; replay skips it."""

    api_key: int
    version: int
    data: bytes


RECORD_TYPES: dict[int, type[MetadataRecord]] = {
    cls.API_KEY: cls
    for cls in (RegisterBrokerRecord, UnregisterBrokerRecord, TopicRecord, PartitionRecord,
                ConfigRecord, PartitionChangeRecord, RemoveTopicRecord, FeatureLevelRecord,
                ProducerIdsRecord, BrokerRegistrationChangeRecord, AccessControlEntryRecord,
                RemoveAccessControlEntryRecord, UserScramCredentialRecord,
                RemoveUserScramCredentialRecord, ClientQuotaRecord)
}


def encode_record(record: MetadataRecord, version: int | None = None) -> bytes:
    """The record value for `record` (frame version, type, version, fields)."""
    version = type(record).WRITE_VERSION if version is None else version
    if version > type(record).MAX_VERSION:
        raise ValueError(f"{type(record).__name__} has no version {version}")
    out = io.BytesIO()
    write_unsigned_varint(out, FRAME_VERSION)
    write_unsigned_varint(out, type(record).API_KEY)
    write_unsigned_varint(out, version)
    encode_struct(record, out, version)
    return out.getvalue()


_I32 = struct.Struct(">i")


def encode_records(records: Sequence[MetadataRecord], metadata_version: int | None = None
                   ) -> list[bytes]:
    """The record values for `records`, each at its version for `metadata_version` (None:
    its WRITE_VERSION). PartitionRecords that differ only in their id (a topic's, created
    together) are encoded once and the id spliced in: the id is the first field, a fixed
    INT32 after the three one-byte varints of the record header."""
    values: list[bytes] = []
    # Templates by the fields but the id. The previous record's is compared, not hashed
    # (tuples and lists compare items by identity first, in C); others (replicas cycling
    # over brokers) are looked up by a key naming the ids' objects by identity, as UUIDs
    # hash slowly (the records outlive this call, so identities stay unique).
    last: tuple[Any, ...] | None = None
    head = tail = b""
    templates: dict[tuple[Any, ...], tuple[bytes, bytes]] = {}
    version = None if metadata_version is None else PartitionRecord.version_at(metadata_version)
    for record in records:
        if type(record) is not PartitionRecord:
            values.append(encode_record(record, None if metadata_version is None
                                        else type(record).version_at(metadata_version)))
            continue
        r = record
        fields = (r.topic_id, r.replicas, r.isr, r.removing_replicas, r.adding_replicas, r.leader,
                  r.leader_recovery_state, r.leader_epoch, r.partition_epoch, r.directories,
                  r.eligible_leader_replicas, r.last_known_elr)
        if fields != last:
            key = (id(r.topic_id), tuple(r.replicas), tuple(r.isr), tuple(r.removing_replicas),
                   tuple(r.adding_replicas), r.leader, r.leader_recovery_state, r.leader_epoch,
                   r.partition_epoch, tuple(map(id, r.directories)),
                   None if r.eligible_leader_replicas is None else tuple(r.eligible_leader_replicas),
                   None if r.last_known_elr is None else tuple(r.last_known_elr))
            found = templates.get(key)
            if found is None:
                template = encode_record(replace(record, partition_id=0), version)
                found = templates[key] = (template[:3], template[7:])
            (head, tail), last = found, fields
        values.append(head + _I32.pack(r.partition_id) + tail)
    return values


def decode_record(value: bytes) -> MetadataRecord | UnknownRecord:
    """Decode one metadata record value."""
    try:
        frame, pos = _uvarint(value, 0)
        api_key, pos = _uvarint(value, pos)
        version, pos = _uvarint(value, pos)
    except Exception as e:
        raise MetadataRecordError(f"cannot read the record header: {e}") from None
    if frame != FRAME_VERSION:
        raise MetadataRecordError(f"unknown metadata frame version {frame}")
    cls = RECORD_TYPES.get(api_key)
    if cls is None or version > cls.MAX_VERSION:
        return UnknownRecord(api_key, version, bytes(value[pos:]))
    try:
        record, end = decode_struct(cls, value, pos, version)
    except MetadataRecordError:
        raise
    except Exception as e:
        raise MetadataRecordError(f"cannot decode {cls.__name__} v{version}: {e}") from None
    if end != len(value):
        raise MetadataRecordError(
            f"{cls.__name__} v{version}: {len(value) - end} bytes left after the record")
    return record  # type: ignore[no-any-return]
