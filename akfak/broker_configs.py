"""Kafka's broker configs (names, types, defaults, dynamic-ness) and how DescribeConfigs
reports a broker's and a topic's configs, as Kafka 4's ConfigHelper does.

`BROKER_CONFIGS` is the catalog: every broker config Kafka 4.1.1 describes
(akfak.broker_config_catalog), with Kafka's default (akfak's own where akfak does
something else: `AKFAK_DEFAULTS`), its type, whether it may be changed
dynamically (cluster-wide, or only per broker) and a one-line documentation,
plus akfak's own `akfak.*` configs.  Keys a server.properties sets that the catalog does not know
are still described, as Kafka describes them: type UNKNOWN, read-only, and
sensitive (so without a value), since nothing says they are not secrets.

Config sources and where the values come from:
- DYNAMIC_BROKER_CONFIG (2): ConfigRecords for resource name "<node id>";
- DYNAMIC_DEFAULT_BROKER_CONFIG (3): ConfigRecords for resource name "";
- STATIC_BROKER_CONFIG (4): server.properties and command-line overrides;
- DEFAULT_CONFIG (5): the catalog default;
- DYNAMIC_TOPIC_CONFIG (1): a topic's own ConfigRecords.

A topic config's synonyms are its own override, then the broker keys that
supply its default (retention.ms: log.retention.ms, .minutes, .hours) grouped
by source in the order above, values as written (hours stay hours).  As Kafka,
the leading synonyms not named like the primary broker key are dropped and the
source is the first synonym's: with only `log.retention.hours` set, retention.ms
is reported as DEFAULT_CONFIG without synonyms (its value is still the hours').
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from akfak.broker_config_catalog import CATALOG
from akfak.config import DEFAULTS, BrokerConfig
from akfak.errors import InvalidConfig, InvalidRequest
from akfak.log.config import TOPIC_CONFIGS, resolve_topic_config

# DescribeConfigsResponse.ConfigSource ids.
SOURCE_UNKNOWN = 0
SOURCE_TOPIC = 1
SOURCE_DYNAMIC_BROKER = 2
SOURCE_DYNAMIC_DEFAULT_BROKER = 3
SOURCE_STATIC_BROKER = 4
SOURCE_DEFAULT = 5

#: DescribeConfigsResponse.ConfigType ids by ConfigDef type name.
CONFIG_TYPE_IDS: Mapping[str, int] = {
    "unknown": 0, "boolean": 1, "string": 2, "int": 3, "short": 4, "long": 5, "double": 6,
    "list": 7, "class": 8, "password": 9,
}

BrokerConfigType = Literal["boolean", "string", "int", "short", "long", "double", "list", "class",
                           "password"]
#: "" read-only (server.properties only), "cluster" dynamic at the cluster default or per
#: broker, "broker" dynamic per broker only (Kafka's PerBrokerConfigs).
Dynamic = Literal["", "cluster", "broker"]



@dataclass(frozen=True)
class BrokerConfigDef:
    name: str
    type: BrokerConfigType
    default: str | None
    dynamic: Dynamic
    doc: str

    @property
    def read_only(self) -> bool:
        return not self.dynamic

    @property
    def sensitive(self) -> bool:
        return self.type == "password"


#: Where akfak's default differs from Kafka's because akfak does something else: it
#: serves no streams groups (KIP-1071), and has no JMX.
AKFAK_DEFAULTS: Mapping[str, str] = {
    "group.coordinator.rebalance.protocols": "classic,consumer",
    "metric.reporters": "",
}

#: akfak's own broker configs (akfak/partition_limits.py, akfak/log/handles.py).
_AKFAK_CONFIGS: list[tuple[str, BrokerConfigType, str]] = [
    ("akfak.accept.any.replication.factor", "boolean",
     "Whether CreateTopics accepts a replication factor above the broker count (the topic "
     "gets one replica per broker): for test suites written for three brokers."),
    ("akfak.http.allow.remote", "boolean",
     "Whether HTTP (/metrics, the console) may listen on other than loopback when the broker "
     "has no SASL users to ask for."),
    ("akfak.log.max.open.files", "int",
     "The most partition log files akfak keeps open at once (-1: half the soft RLIMIT_NOFILE)."),
    ("akfak.max.partitions", "int", "The most partitions this broker holds."),
    ("akfak.max.partitions.per.request", "int",
     "The most partitions one CreateTopics or CreatePartitions request may add."),
]

_DYNAMIC: Mapping[str, Dynamic] = {"": "", "C": "cluster", "B": "broker"}


def _catalog() -> dict[str, BrokerConfigDef]:
    result: dict[str, BrokerConfigDef] = {}
    for name, type_, default, dynamic, doc in CATALOG:
        result[name] = BrokerConfigDef(name, type_, AKFAK_DEFAULTS.get(name, default),  # type: ignore[arg-type]
                                       _DYNAMIC[dynamic], doc)
    for name, type_, doc in _AKFAK_CONFIGS:
        result[name] = BrokerConfigDef(name, type_, DEFAULTS[name], "", doc)
    return dict(sorted(result.items()))


#: Every broker config akfak knows, by name.
BROKER_CONFIGS: Mapping[str, BrokerConfigDef] = _catalog()

#: Topic config documentation (DescribeConfigs v3+ with include_documentation).
TOPIC_DOCS: Mapping[str, str] = {
    "cleanup.policy": "A string that is either \"delete\" or \"compact\" or both: the retention "
                      "policy to use on old log segments.",
    "compression.gzip.level": "The compression level to use if compression.type is set to gzip.",
    "compression.lz4.level": "The compression level to use if compression.type is set to lz4.",
    "compression.type": "Specify the final compression type for a given topic.",
    "compression.zstd.level": "The compression level to use if compression.type is set to zstd.",
    "delete.retention.ms": "The amount of time to retain delete tombstone markers for log "
                           "compacted topics.",
    "file.delete.delay.ms": "The time to wait before deleting a file from the filesystem.",
    "flush.messages": "The number of messages written to a log partition before we force an "
                      "fsync on the log.",
    "flush.ms": "The time interval at which we force an fsync of data written to the log.",
    "follower.replication.throttled.replicas": "A list of replicas for which log replication "
                                               "should be throttled on the follower side.",
    "index.interval.bytes": "How frequently Kafka adds an index entry to its offset index.",
    "leader.replication.throttled.replicas": "A list of replicas for which log replication "
                                             "should be throttled on the leader side.",
    "local.retention.bytes": "The maximum size of local log segments before they are eligible "
                             "for deletion (-2: retention.bytes).",
    "local.retention.ms": "The time to keep local log segments before they are eligible for "
                          "deletion (-2: retention.ms).",
    "max.compaction.lag.ms": "The maximum time a message will remain ineligible for compaction "
                             "in the log.",
    "max.message.bytes": "The largest record batch size allowed by Kafka (after compression if "
                         "compression is enabled).",
    "message.timestamp.after.max.ms": "The maximum allowed timestamp difference between the "
                                      "broker's timestamp and a message timestamp ahead of it.",
    "message.timestamp.before.max.ms": "The maximum allowed timestamp difference between the "
                                       "broker's timestamp and a message timestamp behind it.",
    "message.timestamp.type": "Define whether the timestamp in the message is message create "
                              "time or log append time.",
    "min.cleanable.dirty.ratio": "How frequently the log compactor will attempt to clean the log.",
    "min.compaction.lag.ms": "The minimum time a message will remain uncompacted in the log.",
    "min.insync.replicas": "The minimum number of replicas that must acknowledge a write for it "
                           "to be considered successful when acks is all.",
    "preallocate": "True if we should preallocate the file on disk when creating a new log "
                   "segment.",
    "remote.log.copy.disable": "Whether to stop copying log segments to remote storage.",
    "remote.log.delete.on.disable": "Whether to delete remote data when tiered storage is "
                                    "disabled for the topic.",
    "remote.storage.enable": "Whether tiered storage is enabled for the topic.",
    "retention.bytes": "The maximum size a partition can grow to before old log segments are "
                       "discarded (delete policy); -1: no limit.",
    "retention.ms": "The maximum time a log is retained before old log segments are discarded "
                    "(delete policy); -1: no time limit.",
    "segment.bytes": "The segment file size for the log.",
    "segment.index.bytes": "The size of the index that maps offsets to file positions.",
    "segment.jitter.ms": "The maximum random jitter subtracted from the scheduled segment roll "
                         "time.",
    "segment.ms": "The period of time after which Kafka will force the log to roll even if the "
                  "segment file isn't full.",
    "unclean.leader.election.enable": "Whether replicas not in the ISR may be elected as leader "
                                      "as a last resort.",
}


# -- broker configs ---------------------------------------------------------------------------


def broker_synonym_names(name: str) -> list[str]:
    """Kafka's DynamicBrokerConfig.brokerConfigSynonyms: the keys that set the same thing."""
    for group in (("log.roll.ms", "log.roll.hours"),
                  ("log.roll.jitter.ms", "log.roll.jitter.hours"),
                  ("log.retention.ms", "log.retention.minutes", "log.retention.hours")):
        if name in group:
            return list(group)
    if name == "log.flush.interval.ms":
        return ["log.flush.interval.ms", "log.flush.scheduler.interval.ms"]
    return [name]


@dataclass(frozen=True)
class ConfigValue:
    """One DescribeConfigs entry, before it becomes a kio entity."""

    name: str
    value: str | None
    source: int
    read_only: bool
    sensitive: bool
    config_type: int
    synonyms: tuple[tuple[str, str | None, int], ...]
    documentation: str | None


def static_broker_value(config: BrokerConfig, name: str) -> str | None:
    """A broker config's static value (server.properties), else its default."""
    if name in config.properties:
        return config.properties[name]
    definition = BROKER_CONFIGS.get(name)
    return definition.default if definition is not None else DEFAULTS.get(name)


def static_broker_configs(config: BrokerConfig) -> dict[str, str]:
    """server.properties and overrides as Kafka's KafkaConfig holds them: in KRaft node.id
    and broker.id are one setting, so either one set statically sets both."""
    static = dict(config.properties)
    for key, other in (("node.id", "broker.id"), ("broker.id", "node.id")):
        if key in static and other not in static:
            static[other] = static[key]
    return static


class BrokerConfigView:
    """A broker's configs as DescribeConfigs reports them: static (server.properties),
    dynamic cluster defaults and dynamic per-broker values over the catalog defaults."""

    def __init__(self, config: BrokerConfig, per_broker: Mapping[str, str],
                 cluster_default: Mapping[str, str]) -> None:
        self.config = config
        self.per_broker = per_broker
        self.cluster_default = cluster_default
        self.static = static_broker_configs(config)
        self.defaults = {n: d.default for n, d in BROKER_CONFIGS.items() if d.default is not None}
        # What akfak falls back to where Kafka has no default (node.id: Kafka requires it).
        self.fallbacks = {n: v for n, v in DEFAULTS.items()
                          if n in BROKER_CONFIGS and n not in self.defaults}

    def layers(self) -> list[tuple[Mapping[str, str], int]]:
        return [(self.per_broker, SOURCE_DYNAMIC_BROKER),
                (self.cluster_default, SOURCE_DYNAMIC_DEFAULT_BROKER),
                (self.static, SOURCE_STATIC_BROKER),
                (self.defaults, SOURCE_DEFAULT)]

    def names(self) -> list[str]:
        """Every config the per-broker resource lists: the catalog and whatever is set."""
        return sorted(set(BROKER_CONFIGS) | set(self.static) | set(self.cluster_default)
                      | set(self.per_broker))

    def entry(self, name: str, *, per_broker_resource: bool, documentation: bool) -> ConfigValue:
        """Kafka's ConfigHelper.createBrokerConfigEntry for `name`."""
        definition = BROKER_CONFIGS.get(name)
        sensitive = definition is None or definition.sensitive
        synonyms: list[tuple[str, str | None, int]] = []
        names = broker_synonym_names(name)
        for layer, source in self.layers():
            for key in names:
                if key in layer:
                    synonyms.append((key, None if sensitive else layer[key], source))
        # As Kafka: synonyms before the first one named `name` are other configs' values.
        while synonyms and synonyms[0][0] != name:
            synonyms.pop(0)
        if not per_broker_resource:
            synonyms = [s for s in synonyms if s[2] == SOURCE_DYNAMIC_DEFAULT_BROKER]
        if per_broker_resource:
            value = next((layer[name] for layer, _ in self.layers() if name in layer),
                         self.fallbacks.get(name))
        else:
            value = self.cluster_default.get(name)
        return ConfigValue(
            name=name, value=None if sensitive else value,
            source=synonyms[0][2] if synonyms else SOURCE_DEFAULT,
            read_only=definition is None or definition.read_only,
            sensitive=sensitive,
            config_type=CONFIG_TYPE_IDS[definition.type] if definition else 0,
            synonyms=tuple(synonyms),
            documentation=(definition.doc or None) if documentation and definition else None)


def _parse_broker_value(definition: BrokerConfigDef, value: str) -> None:
    text = value.strip()

    def bad(reason: str) -> InvalidRequest:
        return InvalidRequest(f"Invalid value {value} for configuration {definition.name}: {reason}")

    kind = definition.type
    if kind in ("int", "short", "long"):
        limit = {"int": 2**31, "short": 2**15, "long": 2**63}[kind]
        try:
            number = int(text)
        except ValueError:
            raise bad(f"Not a number of type {kind.upper()}") from None
        if not -limit <= number < limit:
            raise bad(f"Not a number of type {kind.upper()}")
    elif kind == "double":
        try:
            float(text)
        except ValueError:
            raise bad("Not a number of type DOUBLE") from None
    elif kind == "boolean" and text.lower() not in ("true", "false"):
        raise bad("Expected value to be either true or false")


def validate_dynamic_broker_change(props: Mapping[str, str], *, per_broker: bool) -> None:
    """Kafka's DynamicBrokerConfig.validateConfigs, raising InvalidRequest as Kafka's
    ConfigAdminManager does: read-only keys, per-broker keys at the cluster level, values
    that do not parse as the config's type.  Keys Kafka does not know are allowed."""
    read_only = sorted(k for k in props if k in BROKER_CONFIGS and BROKER_CONFIGS[k].read_only)
    if read_only:
        raise InvalidRequest(f"Cannot update these configs dynamically: Set({', '.join(read_only)})")
    # Kafka's DynamicSecurityConfigs: the SSL ones only change per listener (prefixed).
    security = sorted(k for k in props if k.startswith("ssl.") and k in BROKER_CONFIGS)
    if security:
        raise InvalidRequest("These security configs can be dynamically updated only per-listener "
                             f"using the listener prefix: Set({', '.join(security)})")
    for key, value in props.items():
        definition = BROKER_CONFIGS.get(key)
        if definition is not None:
            _parse_broker_value(definition, value)
    if not per_broker:
        only_per_broker = sorted(k for k in props if k in BROKER_CONFIGS
                                 and BROKER_CONFIGS[k].dynamic == "broker")
        if only_per_broker:
            raise InvalidRequest("Cannot update these configs at default cluster level, broker id "
                                 f"must be specified: Set({', '.join(only_per_broker)})")


def is_list_config(resource_type: int, name: str) -> bool:
    """Whether APPEND/SUBTRACT apply to `name` (Kafka: its type is LIST in the controller's
    schema, which knows topic and broker configs only: never for groups, client metrics)."""
    if resource_type == 2:
        definition = TOPIC_CONFIGS.get(name)
        return definition is not None and definition.type == "list"
    if resource_type != 4:
        return False
    broker = BROKER_CONFIGS.get(name)
    return broker is not None and broker.type == "list"


def config_default(resource_type: int, name: str) -> str | None:
    """The schema default APPEND/SUBTRACT start from when a key is not set."""
    if resource_type == 2:
        definition = TOPIC_CONFIGS.get(name)
        return None if definition is None else definition.default
    broker = BROKER_CONFIGS.get(name)
    return None if broker is None else broker.default


# -- topic configs ----------------------------------------------------------------------------


def normalize_value(type_: str, value: str) -> str:
    """The value as Kafka's ConfigDef.convertToString renders it after parsing."""
    text = value.strip()
    try:
        if type_ in ("int", "long"):
            return str(int(text))
        if type_ == "boolean":
            return text.lower()
        if type_ == "list":
            return ",".join(item.strip() for item in text.split(",") if item.strip())
        if type_ == "double":
            return repr(float(text))
    except ValueError:
        pass
    return value


def topic_config_entries(config: BrokerConfig, overrides: Mapping[str, str],
                         per_broker: Mapping[str, str], cluster_default: Mapping[str, str], *,
                         keys: Iterable[str] | None = None, documentation: bool = False
                         ) -> list[ConfigValue]:
    """Every topic config (or those in `keys`) of a topic with `overrides`, sorted by name,
    as Kafka's ConfigHelper.createTopicConfigEntry reports them."""
    view = BrokerConfigView(config, per_broker, cluster_default)
    merged_dynamic = {**cluster_default, **per_broker}
    wanted = None if keys is None else set(keys)
    entries = []
    for name, definition in TOPIC_CONFIGS.items():
        if wanted is not None and name not in wanted:
            continue
        try:
            resolved = resolve_topic_config(name, config, overrides, merged_dynamic)
        except InvalidConfig:
            resolved = resolve_topic_config(name, config, overrides, {})
        synonyms: list[tuple[str, str | None, int]] = []
        if name in overrides:
            synonyms.append((name, normalize_value(definition.type, overrides[name]), SOURCE_TOPIC))
        broker_keys = [key for key, _ in definition.synonyms]
        for layer, source in view.layers():
            for key in broker_keys:
                if key in layer:
                    synonyms.append((key, layer[key], source))
        # As Kafka's ConfigHelper: broker synonyms before the primary broker key (those
        # that only supply a default, like log.retention.hours) are dropped, and the source
        # is the first synonym's.
        inherited = synonyms[1:] if name in overrides else synonyms
        while inherited and broker_keys and inherited[0][0] != broker_keys[0]:
            inherited.pop(0)
        synonyms = synonyms[:1] + inherited if name in overrides else inherited
        source = synonyms[0][2] if synonyms else SOURCE_DEFAULT
        entries.append(ConfigValue(
            name=name, value=normalize_value(definition.type, resolved.value), source=source,
            read_only=False, sensitive=False, config_type=CONFIG_TYPE_IDS[definition.type],
            synonyms=tuple(synonyms),
            documentation=TOPIC_DOCS.get(name) if documentation else None))
    return entries
