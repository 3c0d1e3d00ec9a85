"""Per-topic log configuration: Kafka's topic configs over the broker's defaults.

Each topic config (`retention.ms`, `segment.bytes` ...) takes, in order: the
topic's own override (from ConfigRecords in the metadata log), the broker's
synonym keys (`log.retention.ms`, `.minutes`, `.hours` ...), then Kafka's
default.  `TOPIC_CONFIGS` is the table of every topic config Kafka 4 knows,
with its broker synonyms, so DescribeConfigs can list them all with their
sources; `LogConfig` is the resolved subset the partition log acts on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Literal

from akfak.config import BrokerConfig
from akfak.errors import InvalidConfig

LONG_MAX = 2**63 - 1
INT_MAX = 2**31 - 1

ConfigType = Literal["long", "int", "string", "list", "boolean", "double"]
ConfigSource = Literal["TOPIC_CONFIG", "DYNAMIC_BROKER_CONFIG", "DYNAMIC_DEFAULT_BROKER_CONFIG",
                       "STATIC_BROKER_CONFIG", "DEFAULT_CONFIG"]


@dataclass(frozen=True)
class TopicConfigDef:
    """One topic-level config: its type, Kafka's default and its broker-level synonyms."""

    name: str
    type: ConfigType
    default: str
    #: Broker keys that supply the default, first match wins, with a multiplier
    #: (log.retention.hours is hours of retention.ms).
    synonyms: tuple[tuple[str, int], ...] = ()
    minimum: int | float | None = None
    choices: tuple[str, ...] | None = None


def _d(name: str, type_: ConfigType, default: str, *synonyms: tuple[str, int],
       minimum: int | float | None = None, choices: tuple[str, ...] | None = None
       ) -> TopicConfigDef:
    return TopicConfigDef(name, type_, default, tuple(synonyms), minimum, choices)


_COMPRESSION = ("uncompressed", "zstd", "lz4", "snappy", "gzip", "producer")

#: Kafka 4 topic configs, sorted by name as Kafka's DescribeConfigs lists them.
TOPIC_CONFIGS: Mapping[str, TopicConfigDef] = {d.name: d for d in sorted([
    _d("cleanup.policy", "list", "delete", ("log.cleanup.policy", 1),
       choices=("delete", "compact")),
    _d("compression.gzip.level", "int", "-1", ("compression.gzip.level", 1)),
    _d("compression.lz4.level", "int", "9", ("compression.lz4.level", 1)),
    _d("compression.type", "string", "producer", ("compression.type", 1), choices=_COMPRESSION),
    _d("compression.zstd.level", "int", "3", ("compression.zstd.level", 1)),
    _d("delete.retention.ms", "long", "86400000", ("log.cleaner.delete.retention.ms", 1),
       minimum=0),
    _d("file.delete.delay.ms", "long", "60000", ("log.segment.delete.delay.ms", 1), minimum=0),
    _d("flush.messages", "long", str(LONG_MAX), ("log.flush.interval.messages", 1), minimum=1),
    _d("flush.ms", "long", str(LONG_MAX), ("log.flush.interval.ms", 1),
       ("log.flush.scheduler.interval.ms", 1), minimum=0),
    _d("follower.replication.throttled.replicas", "list", ""),
    _d("index.interval.bytes", "int", "4096", ("log.index.interval.bytes", 1), minimum=0),
    _d("leader.replication.throttled.replicas", "list", ""),
    _d("local.retention.bytes", "long", "-2", ("log.local.retention.bytes", 1), minimum=-2),
    _d("local.retention.ms", "long", "-2", ("log.local.retention.ms", 1), minimum=-2),
    _d("max.compaction.lag.ms", "long", str(LONG_MAX), ("log.cleaner.max.compaction.lag.ms", 1),
       minimum=1),
    _d("max.message.bytes", "int", "1048588", ("message.max.bytes", 1), minimum=0),
    _d("message.timestamp.after.max.ms", "long", "3600000",
       ("log.message.timestamp.after.max.ms", 1), minimum=0),
    _d("message.timestamp.before.max.ms", "long", str(LONG_MAX),
       ("log.message.timestamp.before.max.ms", 1), minimum=0),
    _d("message.timestamp.type", "string", "CreateTime", ("log.message.timestamp.type", 1),
       choices=("CreateTime", "LogAppendTime")),
    _d("min.cleanable.dirty.ratio", "double", "0.5", ("log.cleaner.min.cleanable.ratio", 1),
       minimum=0),
    _d("min.compaction.lag.ms", "long", "0", ("log.cleaner.min.compaction.lag.ms", 1), minimum=0),
    _d("min.insync.replicas", "int", "1", ("min.insync.replicas", 1), minimum=1),
    _d("preallocate", "boolean", "false", ("log.preallocate", 1)),
    _d("remote.log.copy.disable", "boolean", "false"),
    _d("remote.log.delete.on.disable", "boolean", "false"),
    _d("remote.storage.enable", "boolean", "false"),
    _d("retention.bytes", "long", "-1", ("log.retention.bytes", 1)),
    _d("retention.ms", "long", "604800000", ("log.retention.ms", 1),
       ("log.retention.minutes", 60_000), ("log.retention.hours", 3_600_000), minimum=-1),
    _d("segment.bytes", "int", str(1024**3), ("log.segment.bytes", 1), minimum=14),
    _d("segment.index.bytes", "int", str(10 * 1024 * 1024), ("log.index.size.max.bytes", 1),
       minimum=4),
    _d("segment.jitter.ms", "long", "0", ("log.roll.jitter.ms", 1),
       ("log.roll.jitter.hours", 3_600_000), minimum=0),
    _d("segment.ms", "long", "604800000", ("log.roll.ms", 1), ("log.roll.hours", 3_600_000),
       minimum=1),
    _d("unclean.leader.election.enable", "boolean", "false",
       ("unclean.leader.election.enable", 1)),
], key=lambda d: d.name)}


def validate_topic_config(name: str, value: str | None) -> None:
    """Raise InvalidConfig unless `name` is a topic config and `value` a valid value for it."""
    definition = TOPIC_CONFIGS.get(name)
    if definition is None:
        raise InvalidConfig(f"Unknown topic config name: {name}")
    if value is None:
        return
    _parse(definition, value)


def _parse(definition: TopicConfigDef, value: str) -> object:
    name, text = definition.name, value.strip()

    def bad(reason: str) -> InvalidConfig:
        return InvalidConfig(f"Invalid value {value} for configuration {name}: {reason}")

    result: object
    if definition.type in ("long", "int"):
        try:
            number = int(text)
        except ValueError:
            raise bad(f"Not a number of type {definition.type.upper()}") from None
        limit = LONG_MAX if definition.type == "long" else INT_MAX
        if not -limit - 1 <= number <= limit:
            raise bad(f"Not a number of type {definition.type.upper()}")
        result = number
    elif definition.type == "double":
        try:
            result = float(text)
        except ValueError:
            raise bad("Not a number of type DOUBLE") from None
    elif definition.type == "boolean":
        if text.lower() not in ("true", "false"):
            raise bad("Expected value to be either true or false")
        result = text.lower() == "true"
    elif definition.type == "list":
        items = [item.strip() for item in text.split(",") if item.strip()]
        if definition.choices is not None:
            for item in items:
                if item not in definition.choices:
                    raise bad(f"String must be one of: {', '.join(definition.choices)}")
        result = tuple(items)
    else:
        if definition.choices is not None and text not in definition.choices:
            raise bad(f"String must be one of: {', '.join(definition.choices)}")
        result = text
    if definition.minimum is not None and isinstance(result, int | float) and not isinstance(
            result, bool) and result < definition.minimum:
        raise bad(f"Value must be at least {definition.minimum}")
    return result


@dataclass(frozen=True)
class ResolvedConfig:
    """A topic config's effective value and where it came from (for DescribeConfigs)."""

    name: str
    value: str
    source: ConfigSource
    #: (broker key, value, source) for each broker synonym that is set.
    synonyms: tuple[tuple[str, str, ConfigSource], ...]


def _broker_value(broker: BrokerConfig, dynamic: Mapping[str, str], key: str
                  ) -> tuple[str, ConfigSource] | None:
    if key in dynamic:
        return dynamic[key], "DYNAMIC_DEFAULT_BROKER_CONFIG"
    if broker.is_set(key):
        value = broker.get(key)
        if value is not None:
            return value, "STATIC_BROKER_CONFIG"
    return None


def resolve_topic_config(name: str, broker: BrokerConfig, overrides: Mapping[str, str],
                         dynamic_broker: Mapping[str, str] | None = None) -> ResolvedConfig:
    """The effective value of topic config `name`: topic override, broker synonym, default.

    `dynamic_broker` holds broker configs set through the metadata log
    (AlterConfigs on the broker resource), which take precedence over the
    static server.properties values.
    """
    definition = TOPIC_CONFIGS[name]
    dynamic = dynamic_broker or {}
    synonyms: list[tuple[str, str, ConfigSource]] = []
    chosen: tuple[str, ConfigSource] | None = None
    if name in overrides:
        chosen = (overrides[name], "TOPIC_CONFIG")
    for key, multiplier in definition.synonyms:
        found = _broker_value(broker, dynamic, key)
        if found is None:
            continue
        value, source = found
        if multiplier != 1:
            try:
                value = str(int(value.strip()) * multiplier)
            except ValueError:
                raise InvalidConfig(f"Invalid value {value} for configuration {key}") from None
        synonyms.append((key, value, source))
        if chosen is None:
            chosen = (value, source)
    if chosen is None:
        chosen = (definition.default, "DEFAULT_CONFIG")
    return ResolvedConfig(name, chosen[0], chosen[1], tuple(synonyms))


@dataclass(frozen=True)
class LogConfig:
    """What a partition log needs to know, resolved from topic and broker configs."""

    segment_bytes: int = 1024**3
    segment_ms: int = 604_800_000
    segment_jitter_ms: int = 0
    segment_index_bytes: int = 10 * 1024 * 1024
    retention_ms: int = 604_800_000
    retention_bytes: int = -1
    max_message_bytes: int = 1_048_588
    cleanup_policy: tuple[str, ...] = ("delete",)
    message_timestamp_type: str = "CreateTime"
    message_timestamp_after_max_ms: int = 3_600_000
    message_timestamp_before_max_ms: int = LONG_MAX
    flush_messages: int = LONG_MAX
    flush_ms: int = LONG_MAX
    index_interval_bytes: int = 4096
    file_delete_delay_ms: int = 60_000
    compression_type: str = "producer"
    min_insync_replicas: int = 1
    #: Compaction (cleanup.policy=compact): how long tombstones stay after the cleaning that
    #: first saw them (KIP-534), how dirty a log must be, and the time window a record is
    #: kept from (min) or forced into (max) cleaning.
    delete_retention_ms: int = 86_400_000
    min_cleanable_dirty_ratio: float = 0.5
    min_compaction_lag_ms: int = 0
    max_compaction_lag_ms: int = LONG_MAX
    #: The topic's own overrides (only those explicitly set), for DescribeConfigs.
    overrides: Mapping[str, str] | None = None

    @property
    def log_append_time(self) -> bool:
        return self.message_timestamp_type == "LogAppendTime"

    @property
    def delete_enabled(self) -> bool:
        return "delete" in self.cleanup_policy

    @property
    def compact(self) -> bool:
        """Whether the log cleaner compacts this log (cleanup.policy contains compact)."""
        return "compact" in self.cleanup_policy

    @property
    def max_index_entries(self) -> int:
        return max(1, self.segment_index_bytes // 8)

    @classmethod
    def from_broker(cls, broker: BrokerConfig, overrides: Mapping[str, str] | None = None,
                    dynamic_broker: Mapping[str, str] | None = None) -> LogConfig:
        """Resolve every field from `overrides` (topic configs), then the broker's config.

        Raises InvalidConfig for an unknown topic config or an invalid value.
        """
        overrides = dict(overrides or {})
        for key, value in overrides.items():
            validate_topic_config(key, value)
        values: dict[str, object] = {}
        for field_ in fields(cls):
            if field_.name == "overrides":
                continue
            name = field_.name.replace("_", ".")
            resolved = resolve_topic_config(name, broker, overrides, dynamic_broker)
            values[field_.name] = _parse(TOPIC_CONFIGS[name], resolved.value)
        return cls(**values, overrides=overrides)  # type: ignore[arg-type]

    def with_overrides(self, **changes: object) -> LogConfig:
        return replace(self, **changes)  # type: ignore[arg-type]


#: Map LogConfig field names to their topic config name, for callers building one by hand.
FIELD_TO_CONFIG: Mapping[str, str] = {f.name: f.name.replace("_", ".")
                                     for f in fields(LogConfig) if f.name != "overrides"}
