"""The PostgreSQL side of a cluster of brokers (akfak/cluster.py is the reactor side): the
broker registrations with their leases, the controller's takeover, the metadata log's tail
and a partition's rows for a new leader.  Every function here runs on a thread with a
connection of its own (autocommit); nothing touches the reactor.

Leases are counted by PostgreSQL's clock (`now()`), never the brokers': a broker is live
while `lease_until > now()`.  The controller is the leader of `__cluster_metadata-0`: its
row's leader and leader epoch, taken by a conditional UPDATE once the holder's lease ran
out, so two brokers can never both write the metadata log (the epoch is in every append).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from akfak.log.checkpoints import METADATA_TOPIC_ID
from akfak.log.metadata_log import METADATA_PARTITION

METADATA_KEY = (METADATA_TOPIC_ID, METADATA_PARTITION)

#: (listener name, host, port, security protocol)
Endpoint = tuple[str, str, int, str]


@dataclass(frozen=True)
class BrokerRow:
    node_id: int
    endpoints: tuple[Endpoint, ...]
    rack: str | None
    live: bool


@dataclass(frozen=True)
class Snapshot:
    """What one tick read: every registered broker, the controller, the metadata log's tail."""

    brokers: tuple[BrokerRow, ...]
    controller: int
    controller_epoch: int
    #: (base offset, batch) of the metadata log from the offset asked for
    tail: tuple[tuple[int, bytes], ...]
    #: the controller's epoch if this tick made this broker the controller
    took_control: int | None = None
    #: topics other brokers asked the controller to create (request_topic)
    wanted: tuple[str, ...] = ()


def register(conn: Any, node_id: int, incarnation: uuid.UUID, endpoints: Sequence[Endpoint],
             rack: str | None, lease_ms: int) -> None:
    """Register (or register again, a new incarnation) with a fresh lease."""
    conn.execute(
        "INSERT INTO akfak_broker (node_id, incarnation, endpoints, rack, lease_until) "
        "VALUES (%s, %s, %s, %s, now() + %s * interval '1 millisecond') "
        "ON CONFLICT (node_id) DO UPDATE SET incarnation = EXCLUDED.incarnation, "
        "endpoints = EXCLUDED.endpoints, rack = EXCLUDED.rack, lease_until = EXCLUDED.lease_until",
        (node_id, incarnation, json.dumps(list(endpoints)), rack, lease_ms))


def tick(conn: Any, node_id: int, incarnation: uuid.UUID, endpoints: Sequence[Endpoint],
         lease_ms: int, tail_from: int, *, may_take_control: bool = True,
         created: Sequence[str] = (), announce: bool = False) -> Snapshot:
    """Renew this broker's lease, read the cluster, take the controller role if its holder's
    lease ran out, and read the metadata log from `tail_from`; the controller also reads the
    topics asked for (and forgets the requests for `created`, which exist now)."""
    renewed = conn.execute(
        "UPDATE akfak_broker SET lease_until = now() + %s * interval '1 millisecond', "
        "endpoints = %s WHERE node_id = %s AND incarnation = %s",
        (lease_ms, json.dumps(list(endpoints)), node_id, incarnation)).rowcount
    if renewed != 1:  # another process registered with this node id since
        raise RuntimeError(f"node id {node_id} was registered by another broker")
    if announce:  # this broker's listeners are registered now: the others list it at once
        conn.execute(NOTIFY[0])
    brokers = tuple(
        BrokerRow(n, tuple(tuple(e) for e in json.loads(ends)), rack, live)  # type: ignore[misc]
        for n, ends, rack, live in conn.execute(
            "SELECT node_id, endpoints, rack, lease_until > now() FROM akfak_broker "
            "ORDER BY node_id").fetchall())
    controller, epoch = conn.execute(
        "SELECT leader, leader_epoch FROM akfak_partition WHERE topic_id = %s AND partition = %s",
        METADATA_KEY).fetchone()
    took = None
    live = {b.node_id for b in brokers if b.live}
    if may_take_control and controller not in live:
        row = conn.execute(
            "UPDATE akfak_partition SET leader = %s, leader_epoch = leader_epoch + 1 "
            "WHERE topic_id = %s AND partition = %s AND leader_epoch = %s RETURNING leader_epoch",
            (node_id, *METADATA_KEY, epoch)).fetchone()
        if row is not None:
            controller, epoch = node_id, row[0]
            took = epoch
    # Read after the takeover: the former controller can append nothing more, so this is
    # the whole log the new controller continues.
    tail = tuple((base, bytes(data)) for base, data in conn.execute(
        "SELECT base_offset, data FROM akfak_batch WHERE topic_id = %s AND partition = %s "
        "AND last_offset >= %s ORDER BY base_offset", (*METADATA_KEY, tail_from),
        binary=True).fetchall())
    wanted: tuple[str, ...] = ()
    if controller == node_id:
        if created:
            conn.execute("DELETE FROM akfak_cluster WHERE name = ANY(%s)",
                         ([TOPIC_REQUEST + t for t in created],))
        wanted = tuple(name[len(TOPIC_REQUEST):] for (name,) in conn.execute(
            "SELECT name FROM akfak_cluster WHERE name LIKE %s", (TOPIC_REQUEST + "%",)))
    return Snapshot(brokers, controller, epoch, tail, took, wanted)


#: the akfak_cluster rows by which a broker asks the controller to create a topic
TOPIC_REQUEST = "create.topic."


def request_topic(conn: Any, topic: str) -> None:
    """Ask the controller to create a topic: a row it reads on its tick, and a notification
    so that it ticks at once."""
    conn.execute("INSERT INTO akfak_cluster (name, value) VALUES (%s, '') ON CONFLICT DO NOTHING",
                 (TOPIC_REQUEST + topic,))
    conn.execute(NOTIFY[0])


#: the channel the controller (and a broker joining or leaving) notifies on, so the other
#: brokers read the cluster at once instead of at their next heartbeat
CHANNEL = "akfak_cluster"
NOTIFY = (f"NOTIFY {CHANNEL}", ())  # a Statement's (sql, params)


def listen(connect: Any, notified: Any, stopped: Any) -> None:
    """Block (a thread of its own) calling `notified()` on every notification on CHANNEL
    until `stopped()`; reconnects after an error (PostgreSQL restarting)."""
    import time

    while not stopped():
        try:
            with connect() as conn:
                conn.execute(f"LISTEN {CHANNEL}")
                while not stopped():
                    if any(True for _ in conn.notifies(timeout=0.5)):
                        notified()
        except Exception:
            if not stopped():
                time.sleep(1.0)


def deregister(conn: Any, node_id: int, incarnation: uuid.UUID) -> None:
    """A clean shutdown: the lease ends now, so the others take over without waiting."""
    conn.execute("UPDATE akfak_broker SET lease_until = now() WHERE node_id = %s AND "
                 "incarnation = %s", (node_id, incarnation))
    conn.execute(NOTIFY[0])


def partition_row(conn: Any, topic_id: uuid.UUID, partition: int
                  ) -> tuple[int, int, str, int] | None:
    """A partition's row: log start, next offset, epochs cache, leader epoch."""
    row = conn.execute(
        "SELECT log_start_offset, next_offset, leader_epochs, leader_epoch FROM akfak_partition "
        "WHERE topic_id = %s AND partition = %s", (topic_id, partition)).fetchone()
    return None if row is None else tuple(row)


def allocate_producer_ids(conn: Any, count: int, at_least: int) -> int:
    """A block of `count` producer ids from the shared counter (no broker reuses one)."""
    conn.execute("INSERT INTO akfak_cluster (name, value) VALUES ('next.producer.id', %s) "
                 "ON CONFLICT DO NOTHING", (str(at_least),))
    (end,) = conn.execute(
        "UPDATE akfak_cluster SET value = (GREATEST(value::bigint, %s) + %s)::text "
        "WHERE name = 'next.producer.id' RETURNING value::bigint", (at_least, count)).fetchone()
    return int(end) - count
