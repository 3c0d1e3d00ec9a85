"""Several brokers, one cluster, over a shared PostgreSQL (the reactor side; the SQL is in
akfak/log/pg_cluster.py).  Runs on every broker whose storage is postgres.

- Membership: each broker registers (akfak_broker) and renews its lease every
  `broker.heartbeat.interval.ms`; it is live while the lease, `broker.session.timeout.ms`
  long, has not run out by PostgreSQL's clock.  Metadata and DescribeCluster list the live
  brokers with the endpoints they registered.
- The controller: the live broker leading `__cluster_metadata-0` (taken by a conditional
  UPDATE once its holder's lease ran out).  Only it writes the metadata log (topics,
  configs, leaders); the others answer NOT_CONTROLLER to what would write it, and replay
  the log as it grows (read on every tick).
- Leadership: a partition's replicas are the brokers that may lead it.  The controller
  elects, on every tick, the first live replica of each partition whose leader is not
  live, and gives a partition back to its first replica when that one is live again (so
  leaders stay spread), as PartitionChangeRecords.  The leader and its epoch are mirrored in
  the partition's row in the same transaction, and every append is conditional on that
  epoch (pg_writer.py): a deposed leader, paused or cut off, can never append again.
- A broker serves the partitions it leads only (others answer NOT_LEADER_OR_FOLLOWER): it
  loads a partition's rows when it becomes the leader (after the election is committed, so
  nothing the former leader committed is missing), and drops the cache when it stops.
- Coordinators follow leadership: the group and transaction coordinators own the
  partitions of `__consumer_offsets` / `__transaction_state` this broker leads, loading one
  when it comes to lead it and forgetting it when it stops (`sync_coordinators`); so do the
  share groups (in `__consumer_offsets`) and the share coordinator (`__share_group_state`),
  and a partition's share-partitions go with its leadership.  Only the
  controller creates those topics; another broker asks it with a row in akfak_cluster
  (`request_topic`) and waits for the topic to appear.
- Auto-creation: Metadata on a broker that is not the controller asks it the same way
  (`ask_topic`, without waiting) and answers UNKNOWN_TOPIC_OR_PARTITION meanwhile, as
  Kafka's brokers forward CreateTopics to their controller; the controller creates the
  topic with num.partitions and default.replication.factor.
- Notifications: the controller's metadata commits, a broker's first registered listeners
  and a clean shutdown NOTIFY a channel every broker LISTENs on (a thread of its own), so
  the others read the cluster at once rather than at their next heartbeat.  Lease expiry
  (a broker that died) is seen by the clock only, at the heartbeat.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from akfak.errors import CoordinatorNotAvailable, KafkaError
from akfak.log import pg_cluster
from akfak.log.metadata_log import MetadataLog
from akfak.log.metadata_records import PartitionChangeRecord
from akfak.log.threads import defer_to_thread

if TYPE_CHECKING:
    from akfak.broker import Broker
    from akfak.log.postgres import PostgresLogStorage

log = Logger()


@dataclass(frozen=True)
class LiveBroker:
    node_id: int
    #: listener name -> (host, port)
    endpoints: dict[str, tuple[str, int]]
    rack: str | None


class Cluster:
    """This broker's membership, the controller's elections and the leadership it follows."""

    def __init__(self, broker: Broker, storage: PostgresLogStorage) -> None:
        self.broker = broker
        self.storage = storage
        self.node_id = broker.node_id
        self.interval = broker.config.get_int("broker.heartbeat.interval.ms", 2000) / 1000
        self.live: dict[int, LiveBroker] = {}
        snapshot = storage.first_snapshot
        assert snapshot is not None
        self.controller_id = snapshot.controller
        self._conn: Any = None
        self._busy = False
        self._stopped = False
        self._call: Any = None
        self._loading: set[tuple[str, int]] = set()
        #: topics asked for by other brokers that exist now (their requests go next tick)
        self._created: set[str] = set()
        #: topics this broker is asking the controller for (`ask_topic`), in flight
        self._asking: set[str] = set()
        #: id(coordinator) -> partition -> the leader epoch it loaded the partition in
        self._coordinated: dict[int, dict[int, int]] = {}
        #: a notification came while a tick ran: tick again right after it
        self._again = False
        self._announced = False
        #: waiting for the end of a tick that started after they asked (`fresh`)
        self._fresh: list[Deferred[None]] = []
        self._fresh_next: list[Deferred[None]] = []
        self._view(snapshot)

    # -- what handlers ask ---------------------------------------------------------------

    def brokers(self, listener: str) -> list[tuple[int, str, int, str | None]]:
        """(node id, host, port, rack) of every live broker on `listener`."""
        out = []
        for b in sorted(self.live.values(), key=lambda b: b.node_id):
            address = b.endpoints.get(listener) or next(iter(b.endpoints.values()), None)
            if address is not None:
                out.append((b.node_id, address[0], address[1], b.rack))
        return out

    def endpoint(self, node_id: int, listener: str) -> tuple[str, int] | None:
        b = self.live.get(node_id)
        if b is None:
            return None
        return b.endpoints.get(listener) or next(iter(b.endpoints.values()), None)

    # -- the ticks -----------------------------------------------------------------------

    def start(self) -> None:
        self.sync_leadership()
        self._schedule(0)
        threading.Thread(target=pg_cluster.listen, name=f"akfak-listen-{self.node_id}",
                         args=(self.storage._connect, self._notified, lambda: self._stopped),
                         daemon=True).start()

    def _notified(self) -> None:
        """(the listening thread) Another broker changed the cluster: read it now."""
        clock = self.broker.clock
        if not hasattr(clock, "callFromThread"):  # a test's Clock: the global reactor runs
            from twisted.internet import reactor as clock
        clock.callFromThread(self._tick_now)

    def fresh(self) -> Deferred[None]:
        """Fires after a tick that began after this call (so the live brokers are current)."""
        waiter: Deferred[None] = Deferred()
        if self._busy:
            self._fresh_next.append(waiter)
            self._again = True
        else:
            self._fresh.append(waiter)
            self._tick_now()
        return waiter

    def _tick_now(self) -> None:
        if self._stopped:
            return
        if self._busy:
            self._again = True
            return
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._tick()

    def stop(self) -> Deferred[None] | None:
        """Stop renewing; the lease ends now (a clean shutdown), so others take over."""
        self._stopped = True
        if self._call is not None and self._call.active():
            self._call.cancel()
        storage = self.storage

        def deregister() -> None:
            with storage._connect() as conn:
                pg_cluster.deregister(conn, self.node_id, storage.incarnation)
            if self._conn is not None:
                self._conn.close()

        return defer_to_thread(self.broker.clock, deregister).addErrback(
            lambda f: log.warn("Ending the lease failed: {e}", e=f.getErrorMessage()))

    def _schedule(self, delay: float) -> None:
        if not self._stopped:
            self._call = self.broker.clock.callLater(delay, self._tick)

    def _endpoints(self) -> list[pg_cluster.Endpoint]:
        protocols = {lst.name: lst.security_protocol for lst in self.broker.config.listeners()}
        return [(name, host, port, protocols.get(name, "PLAINTEXT"))
                for name, (host, port) in self.broker.advertised.items()]

    def _tick(self) -> None:
        self._call = None
        if self._busy or self._stopped:
            return
        self._busy = True
        waiting, self._fresh = self._fresh, []
        metadata = self.storage.metadata_log.log
        storage = self.storage
        endpoints = self._endpoints()
        created = sorted(self._created)
        announce = bool(endpoints) and not self._announced

        def work() -> pg_cluster.Snapshot:
            if self._conn is None or self._conn.closed:
                self._conn = storage._connect()
            try:
                return pg_cluster.tick(
                    self._conn, self.node_id, storage.incarnation, endpoints, storage.lease_ms,
                    metadata.log_end_offset, may_take_control=bool(endpoints), created=created,
                    announce=announce)
            except Exception:
                if self._conn.broken:
                    self._conn = None
                raise

        def done(snapshot: pg_cluster.Snapshot) -> None:
            self._created.difference_update(created)  # their requests are gone
            self._announced = self._announced or announce
            self._apply(snapshot)

        defer_to_thread(self.broker.clock, work).addCallbacks(
            done, lambda f: log.warn("Cluster tick failed: {e}", e=f.getErrorMessage().strip())
        ).addBoth(self._ticked, waiting)

    def _ticked(self, _: object, waiting: list[Deferred[None]]) -> None:
        self._busy = False
        self._fresh, self._fresh_next = self._fresh + self._fresh_next, []
        for waiter in waiting:
            waiter.callback(None)
        again, self._again = self._again, False
        self._schedule(0 if again else self.interval)

    def _view(self, snapshot: pg_cluster.Snapshot) -> None:
        self.registered = {b.node_id for b in snapshot.brokers}
        self.live = {b.node_id: LiveBroker(b.node_id, {e[0]: (e[1], e[2]) for e in b.endpoints},
                                           b.rack)
                     for b in snapshot.brokers if b.live and b.endpoints}
        self.controller_id = snapshot.controller

    def _apply(self, snapshot: pg_cluster.Snapshot) -> None:
        if self._stopped:
            return
        self._view(snapshot)
        controller = self.broker.controller
        metadata = self.storage.metadata_log
        end = metadata.end_offset
        if self.storage.replicate(metadata.log, snapshot.tail):  # type: ignore[arg-type]
            controller.image = controller.image.apply(_records(metadata, end))
        if snapshot.took_control is not None:
            log.info("Node {node} is the controller (epoch {epoch})", node=self.node_id,
                     epoch=snapshot.took_control)
            metadata.log.fence_epoch = snapshot.took_control  # type: ignore[attr-defined]
            controller.active = True
        elif snapshot.controller != self.node_id and controller.active:
            log.warn("Node {node} is no longer the controller", node=self.node_id)
            controller.active = False
        if controller.active:
            self._elect()
            self._create_wanted(snapshot.wanted)
        self.sync_leadership()

    # -- the controller's elections ------------------------------------------------------

    def _elect(self) -> None:
        controller = self.broker.controller
        live = set(self.live)
        records: list[PartitionChangeRecord] = []
        for topic in controller.image.topics_by_name.values():
            for p in topic.partitions.values():
                replicas = [r for r in p.replicas if r in live]
                if not replicas:
                    continue  # none may lead it: it stays as it is until one is back
                leader = replicas[0] if p.leader not in live or replicas[0] == p.replicas[0] \
                    else p.leader
                changed_leader = leader != p.leader
                changed_isr = list(p.isr) != replicas
                if changed_leader or changed_isr:
                    records.append(PartitionChangeRecord(
                        p.partition, topic.topic_id, leader=leader if changed_leader else -2,
                        isr=replicas if changed_isr else None))
        if not records:
            return
        moved = sum(r.leader != -2 for r in records)
        if moved:
            log.info("Electing leaders for {n} partitions (live brokers {live})", n=moved,
                     live=sorted(live))
        try:
            controller._commit(records)
        except Exception:
            log.failure("Electing leaders failed")
            return
        # A new leader loads the partition once the election is committed.
        controller.wait_durable().addCallback(lambda _: self.sync_leadership())

    # -- internal topics asked for by other brokers -------------------------------------

    def _coordinators(self) -> list[Any]:
        """What follows the leadership of a coordinator topic's partitions: the group and
        transaction coordinators, the share groups (in `__consumer_offsets`, beside the
        consumer groups) and the share coordinator (`__share_group_state`)."""
        share = getattr(self.broker, "share", None)
        return [c for c in (self.broker.group_coordinator, self.broker.transaction_coordinator,
                            share and share.group_log, share and share.coordinator)
                if c is not None]

    def _coordinator_for(self, topic: str) -> Any:
        for coordinator in self._coordinators():
            if coordinator.store.name == topic and hasattr(coordinator, "ensure_topic"):
                return coordinator
        return None

    def _create_wanted(self, wanted: Iterable[str]) -> None:
        for topic in wanted:
            coordinator = self._coordinator_for(topic)
            if coordinator is None and topic not in self.broker.image.topics_by_name:
                self._auto_create(topic)
            if coordinator is None or topic in self.broker.image.topics_by_name:
                self._created.add(topic)
                continue
            coordinator.ensure_topic().addCallbacks(
                lambda _, t=topic: self._created.add(t),
                lambda f, t=topic: log.warn("Creating {topic} failed: {e}", topic=t,
                                            e=f.getErrorMessage()))

    def _auto_create(self, topic: str) -> None:
        """(the controller) Metadata's auto-creation asked for by another broker."""
        if not self.broker.config.auto_create_topics:
            return
        try:
            self.broker.controller.create_topic(topic)
        except KafkaError as e:
            log.warn("Auto-creating {topic} for another broker failed: {e}", topic=topic, e=e)
            return
        log.info("Auto-created {topic} for another broker", topic=topic)

    def ask_topic(self, topic: str) -> Deferred[None]:
        """Ask the controller to create `topic` (a row in the database and a notification);
        fires once asked (not created). A request for a topic already being asked for is
        not sent again."""
        if topic in self._asking:
            return succeed(None)
        self._asking.add(topic)
        storage = self.storage

        def ask() -> None:
            with storage._connect() as conn:
                pg_cluster.request_topic(conn, topic)

        def asked(result: object) -> object:
            self._asking.discard(topic)
            return result

        return defer_to_thread(self.broker.clock, ask).addBoth(asked)

    def request_topic(self, topic: str, timeout: float = 15.0) -> Deferred[None]:
        """Ask the controller to create `topic` (through the database); fires once this
        broker's metadata has it, or fails with COORDINATOR_NOT_AVAILABLE after `timeout`."""
        clock = self.broker.clock
        deadline = clock.seconds() + timeout

        def wait(_: object) -> Deferred[None]:
            if topic in self.broker.image.topics_by_name:
                return succeed(None)
            if clock.seconds() > deadline or self._stopped:
                raise CoordinatorNotAvailable(f"{topic} was not created in {timeout:.0f} s")
            later: Deferred[None] = Deferred()
            clock.callLater(0.05, later.callback, None)
            return later.addCallback(wait)

        log.info("Asking the controller to create {topic}", topic=topic)
        return self.ask_topic(topic).addCallback(wait)

    # -- following the leadership --------------------------------------------------------

    def sync_coordinators(self) -> None:
        """Give each coordinator the partitions of its topic this broker leads (in the epoch
        it leads them in) and take back the others: Kafka's onElection / onResignation."""
        image = self.broker.controller.image
        for coordinator in self._coordinators():
            if coordinator.owned is None:
                continue
            name = coordinator.store.name
            topic = image.topic(name)
            led: dict[int, int] = {}
            for p in (topic.partitions.values() if topic is not None else ()):
                have = self.storage.get_log(name, p.partition)
                if (p.leader == self.node_id and have is not None
                        and getattr(have, "fence_epoch", None) == p.leader_epoch):
                    led[p.partition] = p.leader_epoch
            loaded = self._coordinated.setdefault(id(coordinator), {})
            for partition, epoch in list(loaded.items()):
                if led.get(partition) != epoch:
                    del loaded[partition]
                    coordinator.on_resignation(partition)
            for partition, epoch in led.items():
                if partition not in loaded:
                    loaded[partition] = epoch
                    coordinator.on_election(partition)

    def sync_leadership(self) -> None:
        """Load the partitions this broker leads and has no current log of; drop the others."""
        controller = self.broker.controller
        storage = self.storage
        wanted: set[tuple[str, int]] = set()
        for topic in controller.image.topics_by_name.values():
            for p in topic.partitions.values():
                key = (topic.name, p.partition)
                if p.leader != self.node_id:
                    continue
                wanted.add(key)
                have = storage.get_log(*key)
                if have is not None and getattr(have, "fence_epoch", None) == p.leader_epoch:
                    continue
                if key not in self._loading:
                    self._load(topic.name, p.partition, topic.topic_id, p.leader_epoch)
        for partition_log in list(storage.logs()):
            key = (partition_log.topic, partition_log.partition)
            if key not in wanted:
                log.info("{tp}: led by node {leader} now", tp=f"{key[0]}-{key[1]}",
                         leader=self._leader(*key))
                storage.release(*key)
                self._forget_share_partitions(*key)
        self.sync_coordinators()

    def _forget_share_partitions(self, topic: str, partition: int) -> None:
        share = getattr(self.broker, "share", None)
        if share is not None:
            share.forget_partition(topic, partition)

    def _leader(self, topic: str, partition: int) -> int:
        p = self.broker.controller.image.partition(topic, partition)
        return -1 if p is None else p.leader

    def _load(self, topic: str, partition: int, topic_id: Any, epoch: int) -> None:
        key = (topic, partition)
        self._loading.add(key)
        storage = self.storage

        def read() -> Any:
            with storage._connect() as conn:
                row = pg_cluster.partition_row(conn, topic_id, partition)
                if row is None:
                    return None, None
                return row, storage.load_rows(conn, (topic_id, partition), row[1], topic)

        def loaded(result: Any) -> None:
            row, rows = result
            current = self.broker.controller.image.partition(topic, partition)
            if (self._stopped or row is None or current is None or current.leader != self.node_id
                    or current.leader_epoch != epoch or row[3] != epoch):
                return  # moved on meanwhile (or the election is not committed yet)
            built = storage.build_log(topic, partition, topic_id,
                                      self.broker.controller._safe_log_config(topic), row, rows)
            built.assign_epoch_start_offset(epoch)
            storage.adopt(built)
            self._forget_share_partitions(topic, partition)  # of an earlier epoch
            log.info("{tp}: leading in epoch {epoch}, offsets [{start}, {end}), {loaded} bytes "
                     "loaded (cached from offset {cached})", tp=f"{topic}-{partition}",
                     epoch=epoch, start=built.log_start_offset, end=built.log_end_offset,
                     loaded=rows.bytes_loaded, cached=built.cached_from)
            self.sync_coordinators()

        def done(_: object) -> None:
            self._loading.discard(key)

        defer_to_thread(self.broker.clock, read).addCallback(loaded).addErrback(
            lambda f: log.failure("Loading {tp} failed", f, tp=f"{topic}-{partition}")
        ).addBoth(done)


def _records(metadata: MetadataLog, start: int) -> Iterable[tuple[int, Any]]:
    """The records of the metadata log from `start` (batches replicated just now)."""
    for batch in metadata.log.iter_batches(start):
        yield from MetadataLog._records(batch)
