"""Group configs (config resource type GROUP, 32) and client-metrics subscriptions
(CLIENT_METRICS, 16): their names, defaults and validation, and how DescribeConfigs reports
them, as Kafka 4.1.1's GroupConfig, ClientMetricsConfigs and ConfigHelper do.

Group configs (KIP-848, KIP-932, KIP-1071) override the broker's group.consumer.*,
group.share.* and group.streams.* defaults for one group.  Their defaults:
consumer.session.timeout.ms and consumer.heartbeat.interval.ms, the share session
timeout, heartbeat interval and record lock duration follow the broker's
group.consumer.* / group.share.* values; the other keys have fixed defaults.  A change is
checked as Kafka's GroupConfig.validate: known names only ("Unknown group config name"),
values of the key's type and lower bound, each timeout and interval within the broker's
group.*.min/max bounds, a session timeout above its heartbeat interval, standby replicas
at most group.streams.max.standby.replicas; all INVALID_CONFIG.  akfak serves classic
groups only, which these configs do not affect (as in Kafka): they are kept and reported.

Client-metrics subscriptions (KIP-714) are `metrics` (metric name prefixes), `interval.ms`
(100 to 3600000) and `match` (client_id=regex ... selectors).  Unknown names and intervals
out of range answer INVALID_REQUEST, bad match patterns INVALID_CONFIG, as Kafka's
ClientMetricsConfigs.validate.  akfak has no telemetry receiver (GetTelemetrySubscriptions
is not offered), so subscriptions are kept and reported only.

Both are ConfigRecords in __cluster_metadata under their resource type, so Kafka opening
akfak's data directory sees the same configs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from akfak.broker_configs import (
    CONFIG_TYPE_IDS,
    SOURCE_DEFAULT,
    ConfigValue,
    normalize_value,
    static_broker_value,
)
from akfak.config import BrokerConfig
from akfak.errors import InvalidConfig, InvalidRequest

SOURCE_CLIENT_METRICS = 7
SOURCE_GROUP = 8


@dataclass(frozen=True)
class ResourceConfigDef:
    name: str
    type: str  # "int", "string" or "list"
    default: str
    #: the broker config whose value is the default, if any
    broker_default: str | None
    minimum: int | None
    doc: str


_G = ResourceConfigDef
GROUP_CONFIGS: Mapping[str, ResourceConfigDef] = {d.name: d for d in sorted((
    _G("consumer.heartbeat.interval.ms", "int", "5000", "group.consumer.heartbeat.interval.ms", 1,
       "The heartbeat interval given to the members of a consumer group."),
    _G("consumer.session.timeout.ms", "int", "45000", "group.consumer.session.timeout.ms", 1,
       "The timeout to detect client failures when using the consumer group protocol."),
    _G("share.auto.offset.reset", "string", "latest", None, None,
       "The strategy to initialize the share-partition start offset: earliest, latest or "
       "by_duration:<ISO-8601 duration>."),
    _G("share.heartbeat.interval.ms", "int", "5000", "group.share.heartbeat.interval.ms", 1,
       "The heartbeat interval given to the members of a share group."),
    _G("share.isolation.level", "string", "read_uncommitted", None, None,
       "Controls how to read records written transactionally (read_committed or "
       "read_uncommitted)."),
    _G("share.record.lock.duration.ms", "int", "30000", "group.share.record.lock.duration.ms",
       1000, "The record acquisition lock duration in milliseconds for share groups."),
    _G("share.session.timeout.ms", "int", "45000", "group.share.session.timeout.ms", 1,
       "The timeout to detect client failures when using the share group protocol."),
    _G("streams.heartbeat.interval.ms", "int", "5000", None, 1,
       "The heartbeat interval given to the members."),
    _G("streams.num.standby.replicas", "int", "0", None, 0,
       "The number of standby replicas for each task."),
    _G("streams.session.timeout.ms", "int", "45000", None, 1,
       "The timeout to detect client failures when using the streams group protocol."),
), key=lambda d: d.name)}

CLIENT_METRICS_CONFIGS: Mapping[str, ResourceConfigDef] = {d.name: d for d in (
    _G("interval.ms", "int", "300000", None, None, "Metrics push interval in milliseconds"),
    _G("match", "list", "", None, None, "Client match criteria"),
    _G("metrics", "list", "", None, None, "Telemetry metric name prefix list"),
)}

#: Group config -> (min, max) broker bounds, in the order Kafka checks them.
_GROUP_BOUNDS: tuple[tuple[str, str, str], ...] = (
    ("consumer.heartbeat.interval.ms", "group.consumer.min.heartbeat.interval.ms",
     "group.consumer.max.heartbeat.interval.ms"),
    ("consumer.session.timeout.ms", "group.consumer.min.session.timeout.ms",
     "group.consumer.max.session.timeout.ms"),
    ("share.heartbeat.interval.ms", "group.share.min.heartbeat.interval.ms",
     "group.share.max.heartbeat.interval.ms"),
    ("share.session.timeout.ms", "group.share.min.session.timeout.ms",
     "group.share.max.session.timeout.ms"),
    ("share.record.lock.duration.ms", "group.share.min.record.lock.duration.ms",
     "group.share.max.record.lock.duration.ms"),
    ("streams.heartbeat.interval.ms", "group.streams.min.heartbeat.interval.ms",
     "group.streams.max.heartbeat.interval.ms"),
    ("streams.session.timeout.ms", "group.streams.min.session.timeout.ms",
     "group.streams.max.session.timeout.ms"),
)

_MATCH_SELECTORS = frozenset({"client_instance_id", "client_id", "client_software_name",
                              "client_software_version", "client_source_address",
                              "client_source_port"})

# java.time.Duration.parse's grammar.
_ISO_DURATION = re.compile(r"([-+]?)P(?:([-+]?\d+)D)?(T(?:([-+]?\d+)H)?(?:([-+]?\d+)M)?"
                           r"(?:([-+]?\d+)(?:[.,](\d{0,9}))?S)?)?", re.IGNORECASE)


# -- describe ---------------------------------------------------------------------------------


def group_default(config: BrokerConfig, definition: ResourceConfigDef) -> str:
    if definition.broker_default is not None:
        value = static_broker_value(config, definition.broker_default)
        if value is not None:
            return normalize_value(definition.type, value)
    return definition.default


def group_config_entries(config: BrokerConfig, overrides: Mapping[str, str],
                         documentation: bool) -> list[ConfigValue]:
    """Every group config of a group with `overrides` (Kafka's createGroupConfigEntry:
    the one synonym is the group's own value, else the default)."""
    entries = []
    for name, definition in GROUP_CONFIGS.items():
        if name in overrides:
            value, source = normalize_value(definition.type, overrides[name]), SOURCE_GROUP
        else:
            value, source = group_default(config, definition), SOURCE_DEFAULT
        entries.append(ConfigValue(
            name=name, value=value, source=source, read_only=False, sensitive=False,
            config_type=CONFIG_TYPE_IDS[definition.type], synonyms=((name, value, source),),
            documentation=definition.doc if documentation else None))
    return entries


def client_metrics_entries(overrides: Mapping[str, str], documentation: bool
                           ) -> list[ConfigValue]:
    """A subscription's configs (Kafka's createClientMetricsConfigEntry: a synonym only for
    what the subscription sets)."""
    entries = []
    for name, definition in CLIENT_METRICS_CONFIGS.items():
        if name in overrides:
            value = normalize_value(definition.type, overrides[name])
            source, synonyms = SOURCE_CLIENT_METRICS, ((name, value, SOURCE_CLIENT_METRICS),)
        else:
            value, source, synonyms = definition.default, SOURCE_DEFAULT, ()
        entries.append(ConfigValue(
            name=name, value=value, source=source, read_only=False, sensitive=False,
            config_type=CONFIG_TYPE_IDS[definition.type], synonyms=synonyms,
            documentation=definition.doc if documentation else None))
    return entries


# -- validate ---------------------------------------------------------------------------------


def _parse(definition: ResourceConfigDef, value: str) -> int | str | list[str]:
    """ConfigDef.parse for one value; raises InvalidConfig with Kafka's ConfigException text."""
    text = value.strip()
    prefix = f"Invalid value {value} for configuration {definition.name}: "
    if definition.type == "int":
        try:
            number = int(text)
        except ValueError:
            raise InvalidConfig(prefix + "Not a number of type INT") from None
        if not -2**31 <= number < 2**31:
            raise InvalidConfig(prefix + "Not a number of type INT")
        if definition.minimum is not None and number < definition.minimum:
            raise InvalidConfig(prefix + f"Value must be at least {definition.minimum}")
        return number
    if definition.type == "list":
        return [item.strip() for item in text.split(",") if item.strip()]
    return text


def _valid_share_reset(value: str) -> bool:
    if value in ("earliest", "latest"):
        return True
    if not value.startswith("by_duration:"):
        return False
    m = _ISO_DURATION.fullmatch(value[len("by_duration:"):])
    if m is None or (m.group(3) is not None and not any(m.group(i) for i in (4, 5, 6))) or \
            not any(m.group(i) for i in (2, 4, 5, 6)):
        return False
    days, hours, minutes, seconds = (int(m.group(i) or 0) for i in (2, 4, 5, 6))
    fraction = int((m.group(7) or "").ljust(9, "0"))
    nanos = ((days * 24 + hours) * 60 + minutes) * 60 * 10**9 + seconds * 10**9 + (
        -fraction if (m.group(6) or "").startswith("-") else fraction)
    return (-nanos if m.group(1) == "-" else nanos) >= 0


def validate_group_configs(config: BrokerConfig, configs: Mapping[str, str]) -> None:
    """Kafka's GroupConfigManager.validate for a group's resulting configs."""
    for name in configs:
        if name not in GROUP_CONFIGS:
            raise InvalidConfig(f"Unknown group config name: {name}")
    # As Kafka: the consumer values default to the broker's, the others to GroupConfig's.
    values: dict[str, int | str | list[str]] = {}
    for name, definition in GROUP_CONFIGS.items():
        if name in configs:
            raw = configs[name]
        elif name.startswith("consumer."):
            raw = group_default(config, definition)
        else:
            raw = definition.default
        values[name] = _parse(definition, raw)
    reset = str(values["share.auto.offset.reset"])
    if not _valid_share_reset(reset):
        raise InvalidConfig(
            f"Invalid value {reset} for configuration share.auto.offset.reset: Invalid value "
            f"`{reset}` for configuration share.auto.offset.reset. The value must be either "
            f"'earliest', 'latest' or of the format 'by_duration:<PnDTnHnMn.nS>'.")
    isolation = str(values["share.isolation.level"])
    if isolation not in ("read_committed", "read_uncommitted"):
        raise InvalidConfig(f"Invalid value {isolation} for configuration share.isolation.level: "
                            f"String must be one of: read_committed, read_uncommitted")

    def bound(key: str) -> int:
        return int(static_broker_value(config, key) or 0)

    for name, low, high in _GROUP_BOUNDS:
        number = int(values[name])  # type: ignore[arg-type]
        if number < bound(low):
            raise InvalidConfig(f"{name} must be greater than or equal to {low}")
        if number > bound(high):
            raise InvalidConfig(f"{name} must be less than or equal to {high}")
        if name.startswith("streams.session"):
            standby = int(values["streams.num.standby.replicas"])  # type: ignore[arg-type]
            if standby > bound("group.streams.max.standby.replicas"):
                raise InvalidConfig("streams.num.standby.replicas must be less than or equal to "
                                    "group.streams.max.standby.replicas")
    for kind in ("consumer", "share", "streams"):
        if int(values[f"{kind}.session.timeout.ms"]) <= int(  # type: ignore[arg-type]
                values[f"{kind}.heartbeat.interval.ms"]):  # type: ignore[arg-type]
            raise InvalidConfig(f"{kind}.session.timeout.ms must be greater than "
                                f"{kind}.heartbeat.interval.ms")


def validate_client_metrics(name: str, configs: Mapping[str, str]) -> None:
    """Kafka's ClientMetricsConfigs.validate for a subscription's resulting configs."""
    if not name:
        raise InvalidRequest("Subscription name can't be empty")
    for key in configs:
        if key not in CLIENT_METRICS_CONFIGS:
            raise InvalidRequest(f"Unknown client metrics configuration: {key}")
    parsed = {key: _parse(CLIENT_METRICS_CONFIGS[key], value) for key, value in configs.items()}
    if "interval.ms" in parsed:
        interval = parsed["interval.ms"]
        if not 100 <= int(interval) <= 3600000:  # type: ignore[arg-type]
            raise InvalidRequest(f"Invalid value {interval} for interval.ms, interval must be "
                                 f"between 100 and 3600000 (1 hour)")
    for pattern in parsed.get("match", []):  # type: ignore[union-attr]
        parts = pattern.split("=")
        while parts and not parts[-1]:  # as Java's String.split
            parts.pop()
        if len(parts) != 2 or parts[0].strip() not in _MATCH_SELECTORS:
            raise InvalidConfig(f"Illegal client matching pattern: {pattern}")
        try:
            re.compile(parts[1].strip())
        except re.error:
            raise InvalidConfig(f"Illegal client matching pattern: {pattern}") from None
