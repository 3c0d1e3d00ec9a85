"""Kafka's broker configs (names, types, defaults, dynamic-ness) and how DescribeConfigs
reports a broker's and a topic's configs, as Kafka 4's ConfigHelper does.

`BROKER_CONFIGS` is the catalog: every broker config a Kafka 4 client commonly
describes or alters, with Kafka's default (akfak's own, where akfak applies a
different one, from `akfak.config.DEFAULTS`), its type, whether it may be
changed dynamically (cluster-wide, or only per broker) and a one-line
documentation.  Keys a server.properties sets that the catalog does not know
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
by source in the order above, values as written (hours stay hours).  Kafka
drops the leading synonyms not named like the primary broker key, so with only
`log.retention.hours` set it reports retention.ms as DEFAULT_CONFIG with no
synonyms; akfak reports the source of the key whose value is in effect.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

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

LONG_MAX = str(2**63 - 1)
INT_MAX = str(2**31 - 1)
DOUBLE_MAX = "1.7976931348623157E308"


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


_C: Dynamic = "cluster"
_B: Dynamic = "broker"

# (name, type, Kafka 4 default, dynamic, documentation)
_CATALOG: list[tuple[str, BrokerConfigType, str | None, Dynamic, str]] = [
    ("advertised.listeners", "string", None, _B,
     "Listeners to publish for clients to use, if different from the listeners config."),
    ("alter.config.policy.class.name", "class", None, "",
     "The alter configs policy class that should be used for validation."),
    ("authorizer.class.name", "string", "", "",
     "The fully qualified name of a class that implements the Authorizer interface."),
    ("auto.create.topics.enable", "boolean", "true", "",
     "Enable auto creation of topic on the server."),
    ("auto.leader.rebalance.enable", "boolean", "true", "",
     "Enables auto leader balancing."),
    ("background.threads", "int", "10", _C,
     "The number of threads to use for various background processing tasks."),
    ("broker.heartbeat.interval.ms", "int", "2000", "",
     "The length of time in milliseconds between broker heartbeats."),
    ("broker.id", "int", "-1", "",
     "The broker id for this server (KRaft uses node.id)."),
    ("broker.rack", "string", None, "",
     "Rack of the broker, used in rack aware replication assignment."),
    ("broker.session.timeout.ms", "int", "9000", "",
     "The length of time in milliseconds that a broker lease lasts if no heartbeats are made."),
    ("client.quota.callback.class", "class", None, "",
     "The fully qualified name of a class that implements the ClientQuotaCallback interface."),
    ("compression.gzip.level", "int", "-1", _C,
     "The compression level to use if compression.type is set to gzip."),
    ("compression.lz4.level", "int", "9", _C,
     "The compression level to use if compression.type is set to lz4."),
    ("compression.type", "string", "producer", _C,
     "Specify the final compression type for a given topic (uncompressed, zstd, lz4, snappy, "
     "gzip, or producer to retain the producer's codec)."),
    ("compression.zstd.level", "int", "3", _C,
     "The compression level to use if compression.type is set to zstd."),
    ("connections.max.idle.ms", "long", "600000", "",
     "Idle connections timeout: the server socket processor threads close the connections "
     "that idle more than this."),
    ("connections.max.reauth.ms", "long", "0", "",
     "When explicitly set to a positive number, the maximum time a session may live before "
     "re-authentication."),
    ("controlled.shutdown.enable", "boolean", "true", "",
     "Enable controlled shutdown of the server."),
    ("controller.listener.names", "string", None, "",
     "A comma-separated list of the names of the listeners used by the controller."),
    ("controller.quorum.append.linger.ms", "int", "25", "",
     "The duration in milliseconds that the leader will wait for writes to accumulate before "
     "flushing them to disk."),
    ("controller.quorum.bootstrap.servers", "list", "", "",
     "List of endpoints to use for bootstrapping the cluster metadata."),
    ("controller.quorum.election.backoff.max.ms", "int", "1000", "",
     "Maximum time in milliseconds before starting new elections."),
    ("controller.quorum.election.timeout.ms", "int", "1000", "",
     "Maximum time in milliseconds to wait without being able to fetch from the leader before "
     "triggering a new election."),
    ("controller.quorum.fetch.timeout.ms", "int", "2000", "",
     "Maximum time without a successful fetch from the current leader before becoming a "
     "candidate."),
    ("controller.quorum.request.timeout.ms", "int", "2000", "",
     "The maximum amount of time the client will wait for the response of a request."),
    ("controller.quorum.retry.backoff.ms", "int", "20", "",
     "The amount of time to wait before attempting to retry a failed request."),
    ("controller.quorum.voters", "list", "", "",
     "Map of id/endpoint information for the set of voters."),
    ("create.topic.policy.class.name", "class", None, "",
     "The create topic policy class that should be used for validation."),
    ("default.replication.factor", "int", "1", "",
     "The replication factor for automatically created topics, and for topics created with "
     "-1 as the replication factor."),
    ("delete.records.purgatory.purge.interval.requests", "int", "1", "",
     "The purge interval (in number of requests) of the delete records request purgatory."),
    ("delete.topic.enable", "boolean", "true", "",
     "Enables delete topic."),
    ("early.start.listeners", "string", None, "",
     "A comma-separated list of listener names which may be started before the authorizer "
     "has finished initialization."),
    ("fetch.max.bytes", "int", "57671680", "",
     "The maximum number of bytes we will return for a fetch request."),
    ("fetch.purgatory.purge.interval.requests", "int", "1000", "",
     "The purge interval (in number of requests) of the fetch request purgatory."),
    ("group.consumer.heartbeat.interval.ms", "int", "5000", "",
     "The heartbeat interval given to the members of a consumer group."),
    ("group.consumer.max.size", "int", INT_MAX, "",
     "The maximum number of consumers that a single consumer group can accommodate."),
    ("group.consumer.session.timeout.ms", "int", "45000", "",
     "The timeout to detect client failures when using the consumer group protocol."),
    ("group.coordinator.rebalance.protocols", "list", "classic,consumer", "",
     "The list of enabled rebalance protocols."),
    ("group.initial.rebalance.delay.ms", "int", "3000", "",
     "The amount of time the group coordinator will wait for more consumers to join a new "
     "group before performing the first rebalance."),
    ("group.max.session.timeout.ms", "int", "1800000", "",
     "The maximum allowed session timeout for registered consumers."),
    ("group.max.size", "int", INT_MAX, "",
     "The maximum number of consumers that a single consumer group can accommodate."),
    ("group.min.session.timeout.ms", "int", "6000", "",
     "The minimum allowed session timeout for registered consumers."),
    ("initial.broker.registration.timeout.ms", "int", "60000", "",
     "How long to wait for the initial broker registration before failing."),
    ("inter.broker.listener.name", "string", None, "",
     "Name of listener used for communication between brokers."),
    ("leader.imbalance.check.interval.seconds", "long", "300", "",
     "The frequency with which the partition rebalance check is triggered by the controller."),
    ("listener.security.protocol.map", "string", None, _B,
     "Map between listener names and security protocols."),
    ("listeners", "string", "PLAINTEXT://:9092", _B,
     "Listener list: comma-separated URIs we will listen on and the listener names."),
    ("log.cleaner.backoff.ms", "long", "15000", _C,
     "The amount of time to sleep when there are no logs to clean."),
    ("log.cleaner.dedupe.buffer.size", "long", "134217728", _C,
     "The total memory used for log deduplication across all cleaner threads."),
    ("log.cleaner.delete.retention.ms", "long", "86400000", _C,
     "The amount of time to retain tombstone message markers for log compacted topics."),
    ("log.cleaner.enable", "boolean", "true", "",
     "Enable the log cleaner process to run on the server."),
    ("log.cleaner.io.buffer.load.factor", "double", "0.9", _C,
     "Log cleaner dedupe buffer load factor."),
    ("log.cleaner.io.buffer.size", "int", "524288", _C,
     "The total memory used for log cleaner I/O buffers across all cleaner threads."),
    ("log.cleaner.io.max.bytes.per.second", "double", DOUBLE_MAX, _C,
     "The log cleaner will be throttled so that the sum of its read and write i/o will be "
     "less than this value on average."),
    ("log.cleaner.max.compaction.lag.ms", "long", LONG_MAX, _C,
     "The maximum time a message will remain ineligible for compaction in the log."),
    ("log.cleaner.min.cleanable.ratio", "double", "0.5", _C,
     "The minimum ratio of dirty log to total log for a log to be eligible for cleaning."),
    ("log.cleaner.min.compaction.lag.ms", "long", "0", _C,
     "The minimum time a message will remain uncompacted in the log."),
    ("log.cleaner.threads", "int", "1", _C,
     "The number of background threads to use for log cleaning."),
    ("log.cleanup.policy", "list", "delete", _C,
     "The default cleanup policy for segments beyond the retention window (delete, compact)."),
    ("log.dir", "string", "/tmp/kafka-logs", "",
     "The directory in which the log data is kept (supplemental for log.dirs)."),
    ("log.dir.failure.timeout.ms", "long", "30000", "",
     "If the broker cannot report a log directory failure to the controller for this long, "
     "it shuts down."),
    ("log.dirs", "string", None, "",
     "A comma-separated list of the directories where the log data is stored."),
    ("log.flush.interval.messages", "long", LONG_MAX, _C,
     "The number of messages accumulated on a log partition before messages are flushed to "
     "disk."),
    ("log.flush.interval.ms", "long", None, _C,
     "The maximum time in ms that a message in any topic is kept in memory before flushed to "
     "disk; if not set, log.flush.scheduler.interval.ms is used."),
    ("log.flush.offset.checkpoint.interval.ms", "int", "60000", "",
     "The frequency with which we update the persistent record of the last flush."),
    ("log.flush.scheduler.interval.ms", "long", LONG_MAX, "",
     "The frequency in ms that the log flusher checks whether any log needs to be flushed."),
    ("log.flush.start.offset.checkpoint.interval.ms", "int", "60000", "",
     "The frequency with which we update the persistent record of log start offset."),
    ("log.index.interval.bytes", "int", "4096", _C,
     "The interval with which we add an entry to the offset index."),
    ("log.index.size.max.bytes", "int", "10485760", _C,
     "The maximum size in bytes of the offset index."),
    ("log.initial.task.delay.ms", "long", "30000", "",
     "The initial task delay in milliseconds when initializing tasks in the LogManager."),
    ("log.local.retention.bytes", "long", "-2", _C,
     "The maximum size of local log segments that can grow for a partition before it gets "
     "eligible for deletion (-2: log.retention.bytes)."),
    ("log.local.retention.ms", "long", "-2", _C,
     "The number of milliseconds to keep the local log segments before they get eligible for "
     "deletion (-2: log.retention.ms)."),
    ("log.message.timestamp.after.max.ms", "long", "3600000", _C,
     "The allowed timestamp difference between the broker's timestamp and a message "
     "timestamp that is ahead of it."),
    ("log.message.timestamp.before.max.ms", "long", LONG_MAX, _C,
     "The allowed timestamp difference between the broker's timestamp and a message "
     "timestamp that is behind it."),
    ("log.message.timestamp.type", "string", "CreateTime", _C,
     "Whether the timestamp in the message is message create time or log append time "
     "(CreateTime or LogAppendTime)."),
    ("log.preallocate", "boolean", "false", _C,
     "Should pre allocate file when create new segment?"),
    ("log.retention.bytes", "long", "-1", _C,
     "The maximum size of the log before deleting it."),
    ("log.retention.check.interval.ms", "long", "300000", "",
     "The frequency in milliseconds that the log cleaner checks whether any log is eligible "
     "for deletion."),
    ("log.retention.hours", "int", "168", "",
     "The number of hours to keep a log file before deleting it, tertiary to "
     "log.retention.ms."),
    ("log.retention.minutes", "int", None, "",
     "The number of minutes to keep a log file before deleting it, secondary to "
     "log.retention.ms."),
    ("log.retention.ms", "long", None, _C,
     "The number of milliseconds to keep a log file before deleting it; if not set, "
     "log.retention.minutes is used. -1: no time limit."),
    ("log.roll.hours", "int", "168", "",
     "The maximum time before a new log segment is rolled out (in hours), secondary to "
     "log.roll.ms."),
    ("log.roll.jitter.hours", "int", "0", "",
     "The maximum jitter to subtract from logRollTimeMillis (in hours)."),
    ("log.roll.jitter.ms", "long", None, _C,
     "The maximum jitter to subtract from logRollTimeMillis (in milliseconds)."),
    ("log.roll.ms", "long", None, _C,
     "The maximum time before a new log segment is rolled out (in milliseconds)."),
    ("log.segment.bytes", "int", "1073741824", _C,
     "The maximum size of a single log file."),
    ("log.segment.delete.delay.ms", "long", "60000", _C,
     "The amount of time to wait before deleting a file from the filesystem."),
    ("max.connection.creation.rate", "int", INT_MAX, _C,
     "The maximum connection creation rate we allow in the broker at any time."),
    ("max.connections", "int", INT_MAX, _C,
     "The maximum number of connections we allow in the broker at any time."),
    ("max.connections.per.ip", "int", INT_MAX, _C,
     "The maximum number of connections we allow from each ip address."),
    ("max.connections.per.ip.overrides", "string", "", _C,
     "A comma-separated list of per-ip or hostname overrides to the default maximum number "
     "of connections."),
    ("max.incremental.fetch.session.cache.slots", "int", "1000", "",
     "The maximum number of incremental fetch sessions that we will maintain."),
    ("max.request.partition.size.limit", "int", "2000", "",
     "The maximum number of partitions can be served in one request."),
    ("message.max.bytes", "int", "1048588", _C,
     "The largest record batch size allowed by Kafka (after compression if compression is "
     "enabled)."),
    ("metadata.log.dir", "string", None, "",
     "The directory in which the metadata log is kept; if not set, the first log directory."),
    ("metadata.log.max.record.bytes.between.snapshots", "long", "20971520", "",
     "The maximum number of bytes in the log between the latest snapshot and the high-watermark "
     "needed before generating a new snapshot."),
    ("metadata.log.max.snapshot.interval.ms", "long", "3600000", "",
     "The maximum number of milliseconds to wait to generate a snapshot."),
    ("metadata.log.segment.bytes", "int", "1073741824", "",
     "The maximum size of a single metadata log file."),
    ("metadata.log.segment.ms", "long", "604800000", "",
     "The maximum time before a new metadata log file is rolled out (in milliseconds)."),
    ("metadata.max.retention.bytes", "long", "104857600", "",
     "The maximum combined size of the metadata log and snapshots before deleting old "
     "snapshots and log files."),
    ("metadata.max.retention.ms", "long", "604800000", "",
     "The number of milliseconds to keep a metadata log file or snapshot before deleting it."),
    ("metric.reporters", "list", "", _C,
     "A list of classes to use as metrics reporters."),
    ("metrics.num.samples", "int", "2", "",
     "The number of samples maintained to compute metrics."),
    ("metrics.recording.level", "string", "INFO", "",
     "The highest recording level for metrics."),
    ("metrics.sample.window.ms", "long", "30000", "",
     "The window of time a metrics sample is computed over."),
    ("min.insync.replicas", "int", "1", _C,
     "The minimum number of replicas that must acknowledge a write for it to be considered "
     "successful when acks is all."),
    ("node.id", "int", "-1", "",
     "The node ID associated with the roles this process is playing."),
    ("num.io.threads", "int", "8", _C,
     "The number of threads that the server uses for processing requests."),
    ("num.network.threads", "int", "3", _C,
     "The number of threads that the server uses for receiving requests from the network and "
     "sending responses."),
    ("num.partitions", "int", "1", "",
     "The default number of log partitions per topic."),
    ("num.recovery.threads.per.data.dir", "int", "2", _C,
     "The number of threads per data directory to be used for log recovery at startup and "
     "flushing at shutdown."),
    ("num.replica.alter.log.dirs.threads", "int", None, "",
     "The number of threads that can move replicas between log directories."),
    ("num.replica.fetchers", "int", "1", _C,
     "Number of fetcher threads used to replicate records from each source broker."),
    ("offset.metadata.max.bytes", "int", "4096", "",
     "The maximum size for a metadata entry associated with an offset commit."),
    ("offsets.commit.timeout.ms", "int", "5000", "",
     "Offset commit will be delayed until all replicas for the offsets topic receive the "
     "commit or this timeout is reached."),
    ("offsets.load.buffer.size", "int", "5242880", "",
     "Batch size for reading from the offsets segments when loading offsets into the cache."),
    ("offsets.retention.check.interval.ms", "long", "600000", "",
     "Frequency at which to check for stale offsets."),
    ("offsets.retention.minutes", "int", "10080", "",
     "For subscribed consumers, committed offset of a specific partition will be expired and "
     "discarded after this period of time once the group is empty."),
    ("offsets.topic.compression.codec", "int", "0", "",
     "Compression codec for the offsets topic."),
    ("offsets.topic.num.partitions", "int", "50", "",
     "The number of partitions for the offset commit topic (should not change after "
     "deployment)."),
    ("offsets.topic.replication.factor", "short", "3", "",
     "The replication factor for the offsets topic."),
    ("offsets.topic.segment.bytes", "int", "104857600", "",
     "The offsets topic segment bytes should be kept relatively small in order to facilitate "
     "faster log compaction and cache loads."),
    ("principal.builder.class", "class",
     "org.apache.kafka.common.security.authenticator.DefaultKafkaPrincipalBuilder", "",
     "The fully qualified name of a class that implements the KafkaPrincipalBuilder interface."),
    ("process.roles", "list", "", "",
     "The roles that this process plays: 'broker', 'controller', or 'broker,controller'."),
    ("producer.id.expiration.check.interval.ms", "int", "600000", "",
     "The interval at which to remove producer IDs that have expired."),
    ("producer.id.expiration.ms", "int", "86400000", _C,
     "The time in ms that a topic partition leader will wait before expiring producer IDs."),
    ("producer.purgatory.purge.interval.requests", "int", "1000", "",
     "The purge interval (in number of requests) of the producer request purgatory."),
    ("queued.max.request.bytes", "long", "-1", "",
     "The number of queued bytes allowed before no more requests are read."),
    ("queued.max.requests", "int", "500", "",
     "The number of queued requests allowed for data-plane, before blocking the network "
     "threads."),
    ("quota.window.num", "int", "11", "",
     "The number of samples to retain in memory for client quotas."),
    ("quota.window.size.seconds", "int", "1", "",
     "The time span of each sample for client quotas."),
    ("remote.log.storage.system.enable", "boolean", "false", "",
     "Whether to enable tiered storage functionality in a broker or not."),
    ("replica.fetch.backoff.ms", "int", "1000", "",
     "The amount of time to sleep when fetch partition error occurs."),
    ("replica.fetch.max.bytes", "int", "1048576", "",
     "The number of bytes of messages to attempt to fetch for each partition."),
    ("replica.fetch.min.bytes", "int", "1", "",
     "Minimum bytes expected for each fetch response."),
    ("replica.fetch.response.max.bytes", "int", "10485760", "",
     "Maximum bytes expected for the entire fetch response."),
    ("replica.fetch.wait.max.ms", "int", "500", "",
     "The maximum wait time for each fetcher request issued by follower replicas."),
    ("replica.high.watermark.checkpoint.interval.ms", "long", "5000", "",
     "The frequency with which the high watermark is saved out to disk."),
    ("replica.lag.time.max.ms", "long", "30000", "",
     "If a follower has not sent any fetch requests or has not consumed up to the leader's "
     "log end offset for at least this time, the leader removes it from the ISR."),
    ("replica.selector.class", "string", None, "",
     "The fully qualified class name that implements ReplicaSelector."),
    ("replica.socket.receive.buffer.bytes", "int", "65536", "",
     "The socket receive buffer for network requests to the leader for replicating data."),
    ("replica.socket.timeout.ms", "int", "30000", "",
     "The socket timeout for network requests."),
    ("request.timeout.ms", "int", "30000", "",
     "The maximum amount of time the client will wait for the response of a request."),
    ("reserved.broker.max.id", "int", "1000", "",
     "Max number that can be used for a broker.id."),
    ("sasl.enabled.mechanisms", "list", "GSSAPI", _B,
     "The list of SASL mechanisms enabled in the Kafka server."),
    ("sasl.mechanism.controller.protocol", "string", "GSSAPI", "",
     "SASL mechanism used for communication with controllers."),
    ("sasl.mechanism.inter.broker.protocol", "string", "GSSAPI", "",
     "SASL mechanism used for inter-broker communication."),
    ("security.inter.broker.protocol", "string", "PLAINTEXT", "",
     "Security protocol used to communicate between brokers."),
    ("socket.connection.setup.timeout.max.ms", "long", "30000", "",
     "The maximum amount of time the client will wait for the socket connection to be "
     "established."),
    ("socket.connection.setup.timeout.ms", "long", "10000", "",
     "The amount of time the client will wait for the socket connection to be established."),
    ("socket.listen.backlog.size", "int", "50", "",
     "The maximum number of pending connections on the socket."),
    ("socket.receive.buffer.bytes", "int", "102400", "",
     "The SO_RCVBUF buffer of the socket server sockets (-1: the OS default)."),
    ("socket.request.max.bytes", "int", "104857600", "",
     "The maximum number of bytes in a socket request."),
    ("socket.send.buffer.bytes", "int", "102400", "",
     "The SO_SNDBUF buffer of the socket server sockets (-1: the OS default)."),
    ("ssl.cipher.suites", "list", "", _B,
     "A list of cipher suites."),
    ("ssl.client.auth", "string", "none", _B,
     "Configures kafka broker to request client authentication (required, requested, none)."),
    ("ssl.enabled.protocols", "list", "TLSv1.2,TLSv1.3", _B,
     "The list of protocols enabled for SSL connections."),
    ("ssl.endpoint.identification.algorithm", "string", "https", _B,
     "The endpoint identification algorithm to validate server hostname using server "
     "certificate."),
    ("ssl.key.password", "password", None, _B,
     "The password of the private key in the key store file or the PEM key."),
    ("ssl.keystore.location", "string", None, _B,
     "The location of the key store file."),
    ("ssl.keystore.password", "password", None, _B,
     "The store password for the key store file."),
    ("ssl.keystore.type", "string", "JKS", _B,
     "The file format of the key store file."),
    ("ssl.protocol", "string", "TLSv1.3", _B,
     "The SSL protocol used to generate the SSLContext."),
    ("ssl.truststore.location", "string", None, _B,
     "The location of the trust store file."),
    ("ssl.truststore.password", "password", None, _B,
     "The password for the trust store file."),
    ("ssl.truststore.type", "string", "JKS", _B,
     "The file format of the trust store file."),
    ("telemetry.max.bytes", "int", "1048576", "",
     "The maximum size (after compression if compression is used) of telemetry metrics "
     "pushed from a client to the broker."),
    ("transaction.abort.timed.out.transaction.cleanup.interval.ms", "int", "10000", "",
     "The interval at which to rollback transactions that have timed out."),
    ("transaction.max.timeout.ms", "int", "900000", "",
     "The maximum allowed timeout for transactions."),
    ("transaction.partition.verification.enable", "boolean", "true", _C,
     "Enable verification that checks that the partition has been added to the transaction "
     "before writing transactional records to the partition."),
    ("transaction.remove.expired.transaction.cleanup.interval.ms", "int", "3600000", "",
     "The interval at which to remove transactions that have expired."),
    ("transaction.state.log.load.buffer.size", "int", "5242880", "",
     "Batch size for reading from the transaction log segments when loading producer ids and "
     "transactions into the cache."),
    ("transaction.state.log.min.isr", "int", "2", "",
     "The minimum number of replicas that must acknowledge a write to the transaction topic."),
    ("transaction.state.log.num.partitions", "int", "50", "",
     "The number of partitions for the transaction topic."),
    ("transaction.state.log.replication.factor", "short", "3", "",
     "The replication factor for the transaction topic."),
    ("transaction.state.log.segment.bytes", "int", "104857600", "",
     "The transaction topic segment bytes."),
    ("transactional.id.expiration.ms", "int", "604800000", "",
     "The time in ms that the transaction coordinator will wait without receiving any "
     "transaction status updates for the current transaction before expiring its "
     "transactional id."),
    ("unclean.leader.election.enable", "boolean", "false", _C,
     "Indicates whether to enable replicas not in the ISR set to be elected as leader as a "
     "last resort."),
    ("unclean.leader.election.interval.ms", "long", "300000", "",
     "The frequency with which the controller checks if it should perform an unclean leader "
     "election."),
    ("unstable.api.versions.enable", "boolean", "false", "",
     "Whether any unstable versions of the APIs are exposed."),
]


def _catalog() -> dict[str, BrokerConfigDef]:
    result: dict[str, BrokerConfigDef] = {}
    for name, type_, default, dynamic, doc in _CATALOG:
        # Where akfak applies its own default (node.id 1, its listener map ...), report that.
        result[name] = BrokerConfigDef(name, type_, DEFAULTS.get(name, default), dynamic, doc)
    for name, default in DEFAULTS.items():
        if name not in result:
            result[name] = BrokerConfigDef(name, "string", default, "", "")
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


class BrokerConfigView:
    """A broker's configs as DescribeConfigs reports them: static (server.properties),
    dynamic cluster defaults and dynamic per-broker values over the catalog defaults."""

    def __init__(self, config: BrokerConfig, per_broker: Mapping[str, str],
                 cluster_default: Mapping[str, str]) -> None:
        self.config = config
        self.per_broker = per_broker
        self.cluster_default = cluster_default
        self.static = config.properties
        self.defaults = {n: d.default for n, d in BROKER_CONFIGS.items() if d.default is not None}

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
            value = next((layer[name] for layer, _ in self.layers() if name in layer), None)
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
    """Whether APPEND/SUBTRACT apply to `name` (Kafka: its type is LIST)."""
    if resource_type == 2:
        definition = TOPIC_CONFIGS.get(name)
        return definition is not None and definition.type == "list"
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

_TOPIC_SOURCE_IDS = {"TOPIC_CONFIG": SOURCE_TOPIC, "DYNAMIC_BROKER_CONFIG": SOURCE_DYNAMIC_BROKER,
                     "DYNAMIC_DEFAULT_BROKER_CONFIG": SOURCE_DYNAMIC_DEFAULT_BROKER,
                     "STATIC_BROKER_CONFIG": SOURCE_STATIC_BROKER, "DEFAULT_CONFIG": SOURCE_DEFAULT}


def _normalize(type_: str, value: str) -> str:
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
            synonyms.append((name, _normalize(definition.type, overrides[name]), SOURCE_TOPIC))
        broker_keys = [key for key, _ in definition.synonyms]
        for layer, source in view.layers():
            for key in broker_keys:
                if key in layer:
                    synonyms.append((key, layer[key], source))
        source = _TOPIC_SOURCE_IDS[resolved.source]
        if source in (SOURCE_DYNAMIC_BROKER, SOURCE_DYNAMIC_DEFAULT_BROKER):
            # resolve_topic_config merges both dynamic levels; tell them apart again.
            supplier = next((key for key in broker_keys if key in merged_dynamic), None)
            source = (SOURCE_DYNAMIC_BROKER if supplier in per_broker
                      else SOURCE_DYNAMIC_DEFAULT_BROKER)
        entries.append(ConfigValue(
            name=name, value=_normalize(definition.type, resolved.value), source=source,
            read_only=False, sensitive=False, config_type=CONFIG_TYPE_IDS[definition.type],
            synonyms=tuple(synonyms),
            documentation=TOPIC_DOCS.get(name) if documentation else None))
    return entries
