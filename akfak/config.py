"""Broker configuration: Apache Kafka's `server.properties` keys, defaults and overrides.

The configuration is a flat mapping of Kafka's own broker config names, so a
`server.properties` written for Kafka drops in unchanged.  Command-line options
are applied on top of the file as overrides of the same keys.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from twisted.logger import Logger

from akfak.properties import parse_properties

log = Logger()

DEFAULT_LISTEN = "tcp:9092:interface=127.0.0.1"
#: Where the daemon serves /metrics and the console unless told otherwise (loopback only).
DEFAULT_HTTP = "tcp:8080:interface=127.0.0.1"
DEFAULT_LOG_DIR = "/tmp/kafka-logs"  # Kafka's own default for log.dir

#: Kafka's defaults for the broker settings akfak reads.  Keys akfak reads but
#: whose default depends on other keys (log.retention.ms) are not listed.
DEFAULTS: Mapping[str, str] = {
    "node.id": "1",
    "log.dir": DEFAULT_LOG_DIR,
    "num.partitions": "1",
    "min.insync.replicas": "1",
    "authorizer.class.name": "",
    # StandardAuthorizer's own keys
    "super.users": "",
    "allow.everyone.if.no.acl.found": "false",
    "auto.create.topics.enable": "true",
    "default.replication.factor": "1",
    "log.segment.bytes": str(1024 * 1024 * 1024),
    "log.roll.hours": "168",
    "log.retention.hours": "168",
    "log.retention.bytes": "-1",
    "log.retention.check.interval.ms": "300000",
    "log.index.interval.bytes": "4096",
    "log.index.size.max.bytes": str(10 * 1024 * 1024),
    "log.flush.interval.messages": str(2**63 - 1),
    "log.flush.scheduler.interval.ms": str(2**63 - 1),
    "log.flush.offset.checkpoint.interval.ms": "60000",
    "log.cleanup.policy": "delete",
    "log.message.timestamp.type": "CreateTime",
    "log.segment.delete.delay.ms": "60000",
    "log.cleaner.enable": "true",
    "log.cleaner.backoff.ms": "15000",
    "log.cleaner.min.cleanable.ratio": "0.5",
    "log.cleaner.delete.retention.ms": "86400000",
    "log.cleaner.min.compaction.lag.ms": "0",
    "log.cleaner.max.compaction.lag.ms": str(2**63 - 1),
    "log.cleaner.dedupe.buffer.size": str(128 * 1024 * 1024),
    "log.cleaner.io.buffer.load.factor": "0.9",
    "socket.request.max.bytes": "104857600",
    # connection and request bounds (akfak.connections)
    "queued.max.requests": "500",
    "queued.max.request.bytes": "-1",
    "connections.max.idle.ms": "600000",
    "max.connections": str(2**31 - 1),
    "max.connections.per.ip": str(2**31 - 1),
    "max.connections.per.ip.overrides": "",
    # client quotas (akfak.quota_manager)
    "max.connection.creation.rate": str(2**31 - 1),
    "quota.window.num": "11",
    "quota.window.size.seconds": "1",
    "controller.quota.window.num": "11",
    "controller.quota.window.size.seconds": "1",
    "message.max.bytes": "1048588",
    "compression.type": "producer",
    "offsets.topic.num.partitions": "50",
    "offsets.topic.replication.factor": "3",
    "offsets.retention.minutes": "10080",
    "offsets.retention.check.interval.ms": "600000",
    "offsets.topic.segment.bytes": str(100 * 1024 * 1024),
    "group.initial.rebalance.delay.ms": "3000",
    "group.min.session.timeout.ms": "6000",
    "group.max.session.timeout.ms": "1800000",
    "group.max.size": str(2**31 - 1),
    # the consumer group protocol (KIP-848), Kafka 4.1's defaults
    "group.consumer.assignors": "uniform,range",
    "group.consumer.heartbeat.interval.ms": "5000",
    "group.consumer.min.heartbeat.interval.ms": "5000",
    "group.consumer.max.heartbeat.interval.ms": "15000",
    "group.consumer.session.timeout.ms": "45000",
    "group.consumer.min.session.timeout.ms": "45000",
    "group.consumer.max.session.timeout.ms": "60000",
    "group.consumer.max.size": str(2**31 - 1),
    "group.consumer.migration.policy": "bidirectional",
    # Kafka's default is classic,consumer,streams: akfak has no streams groups (KIP-1071)
    "group.coordinator.rebalance.protocols": "classic,consumer",
    "transactional.id.expiration.ms": "604800000",
    "transaction.state.log.num.partitions": "50",
    "transaction.state.log.replication.factor": "3",
    "transaction.state.log.min.isr": "2",
    "transaction.state.log.segment.bytes": str(100 * 1024 * 1024),
    "transaction.max.timeout.ms": "900000",
    # a partition leader's retries of CONCURRENT_TRANSACTIONS (akfak.transactions.verification)
    "add.partitions.to.txn.retry.backoff.ms": "20",
    "add.partitions.to.txn.retry.backoff.max.ms": "100",
    "request.timeout.ms": "30000",
    "transaction.abort.timed.out.transaction.cleanup.interval.ms": "10000",
    "transaction.remove.expired.transaction.cleanup.interval.ms": "3600000",
    "producer.id.expiration.ms": "86400000",
    "producer.id.expiration.check.interval.ms": "600000",
    "max.incremental.fetch.session.cache.slots": "1000",
    "delete.topic.enable": "true",
    "listener.security.protocol.map": (
        "PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL"
    ),
    # akfak's own bounds (akfak/partition_limits.py, akfak/log/handles.py); -1: half the
    # soft RLIMIT_NOFILE.
    "akfak.max.partitions.per.request": "10000",
    "akfak.max.partitions": "100000",
    "akfak.log.max.open.files": "-1",
    # For test brokers: CreateTopics accepts any replication factor on one node (the topic
    # gets one replica); off, a factor above the broker count is INVALID_REPLICATION_FACTOR.
    "akfak.accept.any.replication.factor": "false",
    # HTTP (/metrics, the console) without SASL users on other than loopback (akfak/web/auth.py)
    "akfak.http.allow.remote": "false",
    # the web console's write actions (akfak.web.api.writes): POSTs answer 403 unless true
    "akfak.http.allow.writes": "false",
}

#: Keys akfak reads beyond those with a default above.
OTHER_KNOWN_KEYS = frozenset(
    {
        "akfak.http.listeners",
        # the postgres provider's memory (akfak/log/pg_cached.py, pg_tail.py)
        "akfak.postgres.cache.bytes.per.partition",
        "akfak.postgres.cache.bytes",
        "akfak.postgres.readback.bytes",
        "listeners",
        "advertised.listeners",
        "log.dirs",
        "log.retention.ms",
        "log.retention.minutes",
        "log.roll.ms",
        "log.flush.interval.ms",
        "process.roles",
        "cluster.id",
        "controller.listener.names",
        # akfak's storage provider: disk, memory or postgresql://... (--storage)
        "akfak.storage",
        # how the brokers of a cluster connect to each other (akfak.security.inter_broker)
        "inter.broker.listener.name",
        "security.inter.broker.protocol",
        "sasl.mechanism.inter.broker.protocol",
        # a cluster's leases (akfak/cluster.py, akfak/log/postgres.py)
        "broker.heartbeat.interval.ms",
        "broker.session.timeout.ms",
        # the share coordinator's topic (akfak/share/coordinator.py)
        "share.coordinator.state.topic.num.partitions",
    }
)

#: Kafka's SSL keys (read per listener, `listener.name.<name>.` first; akfak.security.tls).
SSL_KEYS = frozenset(
    {
        "ssl.keystore.type",
        "ssl.keystore.location",
        "ssl.keystore.password",
        "ssl.key.password",
        "ssl.keystore.key",
        "ssl.keystore.certificate.chain",
        "ssl.truststore.type",
        "ssl.truststore.location",
        "ssl.truststore.password",
        "ssl.truststore.certificates",
        "ssl.client.auth",
        "ssl.principal.mapping.rules",
        "ssl.enabled.protocols",
        "ssl.cipher.suites",
        "ssl.protocol",
        "ssl.endpoint.identification.algorithm",
    }
)
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
#: Kafka's SASL keys (akfak.security.sasl), also per listener; and per listener and mechanism
#: (`listener.name.<name>.<mechanism>.KEY`) those of SASL_MECHANISM_KEYS
SASL_KEYS = frozenset({"sasl.enabled.mechanisms", "connections.max.reauth.ms",
                       "connection.failed.authentication.delay.ms", "sasl.server.max.receive.size"})
SASL_MECHANISM_KEYS = frozenset({"sasl.jaas.config", "connections.max.reauth.ms",
                                 "sasl.server.callback.handler.class"})
#: Keys that `listener.name.<name>.KEY` may override, besides the SSL and SASL ones.
LISTENER_KEYS: set[str] = {"max.connection.creation.rate"}

_LISTENER = re.compile(r"^(?P<name>[A-Za-z0-9_]+)://(?P<host>\[[^\]]*\]|[^:]*):(?P<port>\d+)$")


class ConfigError(ValueError):
    """A configuration value akfak cannot use."""


@dataclass(frozen=True)
class Listener:
    """One place the broker listens, and the address it advertises for it."""

    name: str
    endpoint: str  # a Twisted server endpoint string
    advertised_host: str | None = None
    advertised_port: int | None = None
    #: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL (listener.security.protocol.map)
    security_protocol: str = "PLAINTEXT"

    @property
    def tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def prefix(self) -> str:
        """Kafka's ListenerName.configPrefix: where this listener's own settings are."""
        return f"listener.name.{self.name.lower()}."


@dataclass
class BrokerConfig:
    """Kafka broker properties (from a file, then overrides) plus akfak's own options."""

    properties: dict[str, str] = field(default_factory=dict)
    #: Twisted endpoint strings from `--listen`; when given they replace `listeners`.
    listen: list[str] = field(default_factory=list)
    #: Storage provider: "disk" (Kafka's log directory format), "memory" or a
    #: postgresql:// URL (akfak.log.postgres).
    storage: str = "disk"
    #: Twisted endpoint strings from `--http`; None: `akfak.http.listeners`, else no HTTP.
    http: list[str] | None = None

    @classmethod
    def from_file(cls, path: str | Path) -> BrokerConfig:
        return cls(properties=parse_properties(Path(path).read_text(encoding="utf-8")))

    def override(self, key: str, value: str) -> None:
        self.properties[key] = value

    # -- typed access ----------------------------------------------------------

    def get(self, key: str, default: str | None = None) -> str | None:
        if key in self.properties:
            return self.properties[key]
        return DEFAULTS.get(key, default)

    def get_int(self, key: str, default: int | None = None) -> int:
        value = self.get(key)
        if value is None or value.strip() == "":
            if default is None:
                raise ConfigError(f"{key} is not set")
            return default
        try:
            return int(value.strip())
        except ValueError:
            raise ConfigError(f"{key}={value!r} is not an integer") from None

    def get_bool(self, key: str) -> bool:
        value = (self.get(key) or "").strip().lower()
        if value not in ("true", "false"):
            raise ConfigError(f"{key}={value!r} is not true or false")
        return value == "true"

    def is_set(self, key: str) -> bool:
        return key in self.properties

    def listener_get(self, listener: Listener, key: str) -> str | None:
        """`key` as it applies to `listener`: its `listener.name.<name>.` value, else the
        broker-wide one (Kafka's per-listener configs)."""
        prefixed = listener.prefix + key
        if prefixed in self.properties:
            return self.properties[prefixed]
        return self.get(key)

    def unknown_keys(self) -> list[str]:
        return sorted(k for k in self.properties if not _known_key(k))

    @property
    def node_id(self) -> int:
        if not self.is_set("node.id") and self.is_set("broker.id"):
            return self.get_int("broker.id")
        return self.get_int("node.id")

    @property
    def data_dir(self) -> Path:
        dirs = self.get("log.dirs") or self.get("log.dir") or DEFAULT_LOG_DIR
        first, *rest = [d.strip() for d in dirs.split(",") if d.strip()]
        if rest:
            log.warn("akfak uses one log directory; using {first}, ignoring {rest}", first=first,
                     rest=rest)
        return Path(first).expanduser()

    @property
    def num_partitions(self) -> int:
        return self.get_int("num.partitions")

    @property
    def auto_create_topics(self) -> bool:
        return self.get_bool("auto.create.topics.enable")

    @property
    def default_replication_factor(self) -> int:
        return self.get_int("default.replication.factor")

    @property
    def socket_request_max_bytes(self) -> int:
        return self.get_int("socket.request.max.bytes")

    @property
    def message_max_bytes(self) -> int:
        return self.get_int("message.max.bytes")

    @property
    def segment_bytes(self) -> int:
        return self.get_int("log.segment.bytes")

    @property
    def retention_ms(self) -> int:
        """`log.retention.ms`, else `.minutes`, else `.hours`, as Kafka resolves them."""
        if self.is_set("log.retention.ms"):
            return self.get_int("log.retention.ms")
        if self.is_set("log.retention.minutes"):
            return self.get_int("log.retention.minutes") * 60_000
        return self.get_int("log.retention.hours") * 3_600_000

    @property
    def retention_bytes(self) -> int:
        return self.get_int("log.retention.bytes")

    @property
    def roll_ms(self) -> int:
        if self.is_set("log.roll.ms"):
            return self.get_int("log.roll.ms")
        return self.get_int("log.roll.hours") * 3_600_000

    def http_endpoints(self) -> list[str]:
        """Where to serve HTTP (/metrics, the console): `--http`, else the comma-separated
        `akfak.http.listeners`; "none" (or nothing) serves none."""
        spec = self.http if self.http is not None else (self.get("akfak.http.listeners") or "").split(",")
        return [e.strip() for e in spec if e.strip() and e.strip().lower() != "none"]

    def listeners(self) -> list[Listener]:
        """Where to listen: `--listen` endpoints (PLAINTEXT), else Kafka's `listeners` (without
        the controller listeners), each with its security protocol, else the default."""
        if self.listen:
            return [Listener(name="PLAINTEXT", endpoint=e) for e in self.listen]
        spec = self.get("listeners")
        if not spec:
            return [Listener(name="PLAINTEXT", endpoint=DEFAULT_LISTEN)]
        controller = {
            n.strip().upper() for n in (self.get("controller.listener.names") or "").split(",")
            if n.strip()
        }
        protocols = _parse_protocol_map(self.get("listener.security.protocol.map") or "")
        advertised = {name: (host, port) for name, host, port in _parse_listeners(
            self.get("advertised.listeners") or "")}
        parsed = _parse_listeners(spec)
        names = [name for name, _, _ in parsed]
        if len(set(names)) != len(names):
            raise ConfigError(f"Each listener must have a different name, listeners: {spec}")
        result = []
        for name, host, port in parsed:
            if name in controller:
                continue
            protocol = protocols.get(name)
            if protocol is None:
                raise ConfigError(f"No security protocol defined for listener {name}")
            if protocol not in SECURITY_PROTOCOLS:
                raise ConfigError(f"listener {name}: unknown security protocol {protocol} "
                                  f"(one of {', '.join(SECURITY_PROTOCOLS)})")
            adv_host, adv_port = advertised.get(name, (host, None))
            if not adv_host.strip():
                # As Kafka (ListenerInfo.withWildcardHostnamesResolved): an empty host binds
                # every interface and advertises the host's canonical name.
                adv_host = canonical_host_name()
            result.append(Listener(name=name, endpoint=_endpoint_for(host, port),
                                   advertised_host=adv_host if name in advertised or not host
                                   else None, advertised_port=adv_port,
                                   security_protocol=protocol))
        if not result:
            raise ConfigError(f"listeners={spec!r} names no listener for clients")
        return result


def _known_key(key: str) -> bool:
    if key in DEFAULTS or key in OTHER_KNOWN_KEYS or key in SSL_KEYS or key in SASL_KEYS:
        return True
    if key.startswith("listener.name."):
        # listener.name.<name>.<key>: the listener name has no dots, nor has a mechanism
        rest = key[len("listener.name."):].partition(".")[2]
        return (rest in SSL_KEYS or rest in SASL_KEYS or rest in LISTENER_KEYS
                or rest.partition(".")[2] in SASL_MECHANISM_KEYS)
    return False


def canonical_host_name() -> str:
    """Java's InetAddress.getLocalHost().getCanonicalHostName(): this host's name resolved to
    its address, and that address's name (its address itself when it has none)."""
    try:
        address = socket.gethostbyname(socket.gethostname())
    except OSError:
        address = "127.0.0.1"
    try:
        name = socket.gethostbyaddr(address)[0]
    except OSError:
        return address
    # Java keeps the reverse name only if it resolves back to the address.
    try:
        return name if address in socket.gethostbyname_ex(name)[2] else address
    except OSError:
        return address


def _parse_protocol_map(spec: str) -> dict[str, str]:
    result = {}
    for item in spec.split(","):
        if ":" in item:
            name, protocol = item.split(":", 1)
            # Kafka's ListenerName.normalised and SecurityProtocol.forName: upper case
            result[name.strip().upper()] = protocol.strip().upper()
    return result


def _parse_listeners(spec: str) -> list[tuple[str, str, int]]:
    result = []
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        m = _LISTENER.match(item)
        if m is None:
            raise ConfigError(f"cannot parse listener {item!r} (expected NAME://host:port)")
        host = m["host"]
        if host.startswith("["):
            host = host[1:-1]
        result.append((m["name"].upper(), host, int(m["port"])))
    return result


def _endpoint_for(host: str, port: int) -> str:
    """A Twisted endpoint string for Kafka's `host:port` (empty host: all interfaces)."""
    if not host:
        return f"tcp:{port}"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        # Kafka binds a hostname's address; Twisted's TCP endpoints want the address.
        address = ipaddress.ip_address(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][4][0])
    if address.version == 6:
        return f"tcp6:{port}:interface={str(address).replace(':', chr(92) + ':')}"
    return f"tcp:{port}:interface={address}"


def apply_overrides(config: BrokerConfig, overrides: Iterable[str]) -> None:
    """Apply `key=value` strings (Kafka's `--override` form)."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not key=value")
        config.override(key.strip(), value.strip())
