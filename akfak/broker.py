"""The Broker: the shared state every connection's handlers may touch."""

from __future__ import annotations

import itertools
import socket
from collections import Counter
from collections.abc import Callable
from typing import Any

from kio.schema.errors import ErrorCode
from twisted.internet.defer import maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from akfak.cluster import Cluster
from akfak.config import BrokerConfig, ConfigError
from akfak.fetch_sessions import FetchSessionCache
from akfak.groups.coordinator import GroupCoordinator
from akfak.groups.service import close_group_coordinator, open_group_coordinator
from akfak.handlers.registry import HandlerRegistry
from akfak.log import BaseLogStorage, PartitionLog, handles, storage_for
from akfak.log.postgres import redacted
from akfak.metadata import Controller
from akfak.metadata_image import MetadataImage
from akfak.peers import Peers
from akfak.quota_manager import ClientQuotas
from akfak.request_events import RequestObservers
from akfak.security.acls import Authorizer
from akfak.security.sasl import SASL_PROTOCOLS, SaslSettings, listener_protocol
from akfak.share.service import ShareService, open_share_service
from akfak.transactions.coordinator import TransactionCoordinator
from akfak.transactions.producer_ids import ProducerIdManager
from akfak.transactions.service import open_transaction_coordinator
from akfak.waiters import AppendWaiters

log = Logger()

#: The authorizers `authorizer.class.name` may name (Kafka 4's KRaft one).
AUTHORIZERS = ("org.apache.kafka.metadata.authorizer.StandardAuthorizer",)


class Broker:
    """Configuration, the handler registry, storage and coordinators of one node.

    `open()` loads storage before any listener accepts a connection; `close()`
    flushes it after the listeners have stopped (the service orders both).
    """

    def __init__(self, config: BrokerConfig, *, clock: IReactorTime | None = None):
        if clock is None:
            from twisted.internet import reactor as clock  # type: ignore[assignment]
        self.config = config
        self.clock: Any = clock
        self.node_id = config.node_id
        self.registry = HandlerRegistry.discover(self)
        #: listener name -> (host, port) clients are told to connect to
        self.advertised: dict[str, tuple[str, int]] = {}
        self._periodic: list[tuple[float, Callable[[], Any]]] = []
        self._loops: list[_Periodic] = []
        #: set by open()
        self.storage: BaseLogStorage = None  # type: ignore[assignment]
        self.controller: Controller = None  # type: ignore[assignment]
        #: the cluster of brokers over PostgreSQL (akfak/cluster.py); None for one broker
        self.cluster: Cluster | None = None
        #: requests to the cluster's other brokers (akfak/peers.py); None for one broker
        self.peers: Peers | None = None
        self.group_coordinator: GroupCoordinator | None = None  # akfak.groups, set by open()
        #: akfak.transactions, set by open()
        self.transaction_coordinator: TransactionCoordinator | None = None
        self.share: ShareService | None = None  # akfak.share, set by open()
        # The controller exists once the broker is open; ids are only asked for after that.
        self.producer_ids = ProducerIdManager(
            lambda count: int(self.controller.allocate_producer_ids(count)))
        self.fetch_sessions = FetchSessionCache(
            config.get_int("max.incremental.fetch.session.cache.slots"))
        #: long-poll Fetches waiting for appends, keyed by (topic, partition)
        self.waiters = AppendWaiters(self.clock)
        #: client quota sensors and throttled connections (akfak.quota_manager)
        self.quotas = ClientQuotas(self)
        #: who watches answered requests (metrics, the console's inspector)
        self.request_observers = RequestObservers()
        #: numbers connections for the request events (1, 2, ...)
        self.connection_numbers = itertools.count(1)
        #: connections made and lost so far, by listener name (metrics: open = made - lost)
        self.connections_made: Counter[str] = Counter()
        self.connections_lost: Counter[str] = Counter()
        authorizer = config.get("authorizer.class.name") or ""
        if authorizer and authorizer not in AUTHORIZERS:
            raise ConfigError(f"authorizer.class.name={authorizer}: akfak implements "
                              f"{AUTHORIZERS[0]} only")
        self._authorizer_enabled = bool(authorizer)
        self._authorizer: Authorizer | None = None
        self._super_users = [u.strip() for u in (config.get("super.users") or "").split(";")
                             if u.strip()]
        #: SASL settings per listener (akfak.security.sasl), checked now so that a bad one
        #: stops the broker from starting
        self.sasl = SaslSettings(config)
        for listener in config.listeners():
            if listener_protocol(config, listener.name) in SASL_PROTOCOLS:
                self.sasl.for_listener(listener.name)
        if unknown := config.unknown_keys():
            log.info("Keeping but not using these properties: {keys}", keys=", ".join(unknown))

    def open(self) -> None:
        """Load storage (recovering it if needed), then start the periodic tasks."""
        handles.prepare(self.config.get_int("akfak.log.max.open.files"))
        self.storage = storage_for(self.config, clock=self.clock)
        # The controller opens storage itself, so recovery uses each topic's own config.
        self.controller = Controller(self.storage, self.config, clock=self.clock)
        if self.controller.clustered:
            cluster = self.cluster = Cluster(self, self.storage)  # type: ignore[arg-type]
            self.controller.live_brokers = lambda: set(cluster.live) | {self.node_id}
            self.peers = Peers(self)
        url = getattr(self.storage, "url", None)
        log.info("Opened {storage} storage {where}: cluster {cluster}, {topics} topics",
                 storage="postgres" if url else self.config.storage,
                 where=f"at {redacted(url)}" if url else f"in {self.config.data_dir}",
                 cluster=self.cluster_id, topics=len(self.image.topics_by_name))
        writer = getattr(self.storage, "writer", None)
        if writer is not None and hasattr(writer, "on_commit"):
            # postgres: the high watermark rises on commit; waiting fetches read then
            writer.on_commit = self.appended
        # group coordinator (akfak.groups): loads __consumer_offsets, registers its periodic tasks
        self.group_coordinator = open_group_coordinator(self)
        # transaction coordinator (akfak.transactions): loads __transaction_state
        self.transaction_coordinator = open_transaction_coordinator(self)
        if self.cluster is not None:
            self.cluster.start()
        # share groups (akfak.share): loads __share_group_state
        self.share = open_share_service(self)
        storage = self.storage
        tasks = [
            (self.config.get_int("log.retention.check.interval.ms") / 1000,
             lambda: storage.run_retention(self.now_ms())),
            (1.0, lambda: storage.flush_due(self.now_ms())),
            (self.config.get_int("producer.id.expiration.check.interval.ms") / 1000,
             lambda: storage.remove_expired_producers(self.now_ms())),
            (self.config.get_int("log.cleaner.backoff.ms") / 1000,
             lambda: storage.run_cleaner(self.now_ms())),
            *self._periodic,
        ]
        self._loops = [_Periodic(self.clock, interval, task) for interval, task in tasks]

    def close(self) -> Any:
        """Stop the periodic tasks, then flush and close storage; may return a Deferred."""
        for loop in self._loops:
            loop.stop()
        self._loops.clear()
        close_group_coordinator(self)  # group coordinator (akfak.groups): before storage closes
        if self.transaction_coordinator is not None:
            self.transaction_coordinator.stop()
        if self.share is not None:
            self.share.stop()
        if self.storage is None:
            return None
        if self.peers is not None:
            self.peers.close()
        if self.cluster is not None:
            storage = self.storage
            stopped = self.cluster.stop()
            if stopped is not None:
                return stopped.addCallback(lambda _: storage.close())
        return self.storage.close()

    def every(self, seconds: float, task: Callable[[], Any]) -> None:
        """Run `task` every `seconds` while the broker is open (retention, flushes, expiry).

        Register before `open()`; a task returning a Deferred delays its next run."""
        self._periodic.append((seconds, task))

    # -- what handlers ask -------------------------------------------------------------

    def now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    @property
    def image(self) -> MetadataImage:
        """The current metadata image (topics, partitions, configs)."""
        return self.controller.image

    @property
    def cluster_id(self) -> str:
        return self.controller.cluster_id

    @property
    def authorizer(self) -> Authorizer | None:
        """The StandardAuthorizer over the image's ACLs, or None when `authorizer.class.name`
        names none (then everything is allowed, as on Kafka without an authorizer)."""
        if not self._authorizer_enabled:
            return None
        acls = self.controller.image.acls
        if self._authorizer is None or self._authorizer.acls is not acls:
            self._authorizer = Authorizer(
                acls, super_users=self._super_users,
                allow_if_no_acl=self.config.get_bool("allow.everyone.if.no.acl.found"))
        return self._authorizer

    def get_log(self, topic: str, partition: int) -> PartitionLog | None:
        return self.storage.get_log(topic, partition)

    def missing_log_error(self, topic: str, partition: int) -> ErrorCode:
        """The answer for a partition `get_log` has no log for: KAFKA_STORAGE_ERROR if its
        log could not be opened (Kafka's answer for an offline replica), else
        UNKNOWN_TOPIC_OR_PARTITION."""
        if self.storage.is_offline(topic, partition):
            return ErrorCode.kafka_storage_error
        if self.cluster is not None and self.image.partition(topic, partition) is not None:
            return ErrorCode.not_leader_or_follower  # another broker's (or being loaded)
        return ErrorCode.unknown_topic_or_partition

    def current_leader(self, topic: str, partition: int) -> tuple[int, int] | None:
        """KIP-951: (leader, leader epoch) of a partition another broker of the cluster
        leads, for a NOT_LEADER_OR_FOLLOWER answer; None when unknown or not clustered."""
        if self.cluster is None:
            return None
        p = self.image.partition(topic, partition)
        if p is None or p.leader < 0 or p.leader == self.node_id:
            return None
        return p.leader, p.leader_epoch

    def node_endpoint(self, node_id: int, listener: str) -> tuple[str, int, str | None] | None:
        """(host, port, rack) of a live broker of the cluster on `listener`."""
        if self.cluster is None:
            return None
        address = self.cluster.endpoint(node_id, listener)
        live = self.cluster.live.get(node_id)
        return None if address is None else (*address, live.rack if live else None)

    def topic_name(self, topic_id: Any) -> str | None:
        topic = self.controller.image.topic_by_id(topic_id)
        return None if topic is None else topic.name

    def leader_epoch(self, topic: str, partition: int) -> int:
        image = self.controller.image.partition(topic, partition)
        return -1 if image is None else image.leader_epoch

    def delete_topic(self, topic_id: Any, quota: Any = None) -> None:
        """Delete a topic (DeleteTopics) and what hangs off it: committed offsets go, as
        Kafka's coordinator removes them, and long polls on it wake to find it gone.
        `quota`: as the controller's delete_topic takes it."""
        topic = self.image.topic_by_id(topic_id)
        self.controller.delete_topic(topic_id=topic_id, quota=quota)
        if topic is None:
            return
        partitions = [(topic.name, p) for p in topic.partitions]
        if self.group_coordinator is not None:
            self.group_coordinator.on_partitions_deleted(partitions)
        for key in partitions:
            self.waiters.notify(key)

    def appended(self, topic: str, partition: int) -> None:
        """Records were appended to a partition: wake the Fetches waiting for it."""
        self.waiters.notify((topic, partition))

    def brokers(self, listener: str) -> list[tuple[int, str, int, str | None]]:
        """(node id, host, port, rack) of the brokers Metadata lists: the live ones of a
        cluster, else this one."""
        if self.cluster is not None:
            listed = self.cluster.brokers(listener)
            if any(node == self.node_id for node, *_ in listed):
                return listed
            # This broker's lease is not renewed yet with its listeners: list it too.
            return sorted([*listed, (self.node_id, *self.advertised_address(listener), None)])
        return [(self.node_id, *self.advertised_address(listener), None)]

    @property
    def controller_id(self) -> int:
        return self.cluster.controller_id if self.cluster is not None else self.node_id

    def advertise(self, listener: str, host: str, port: int) -> None:
        if host in ("0.0.0.0", "::", ""):
            host = socket.getfqdn()
        self.advertised.setdefault(listener, (host, port))

    def advertised_address(self, listener: str) -> tuple[str, int]:
        """The address for clients that reached us through `listener`."""
        if listener in self.advertised:
            return self.advertised[listener]
        return next(iter(self.advertised.values()))


class _Periodic:
    """Runs a task every `interval` seconds on `clock`, the next run counted from the end
    of the last (a Deferred delays it).  A failure is logged and the next run still happens.

    Not LoopingCall: constructing one imports (and so installs) the global reactor, which an
    embedded broker running on its own reactor must not do."""

    def __init__(self, clock: Any, interval: float, task: Callable[[], Any]) -> None:
        self.clock, self.interval, self.task = clock, interval, task
        self._stopped = False
        self._call: Any = clock.callLater(interval, self._run)

    def _run(self) -> None:
        self._call = None
        done = maybeDeferred(self.task)
        done.addErrback(lambda failure: log.failure("Periodic task {task} failed", failure,
                                                    task=self.task))
        done.addCallback(self._schedule)

    def _schedule(self, _: object) -> None:
        if not self._stopped:
            self._call = self.clock.callLater(self.interval, self._run)

    def stop(self) -> None:
        self._stopped = True
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
