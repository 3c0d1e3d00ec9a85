"""The share-partition leader's way to the share coordinator (Kafka's DefaultStatePersister).

On one broker the share coordinator is local.  In a cluster (akfak/cluster.py) a
share-partition's state lives with the leader of its `__share_group_state` partition
(`records.partition_for`, the key "group:topicId:partition"): this broker's own coordinator
when it leads that partition, else the leader's, asked with InitializeShareGroupState,
ReadShareGroupState and WriteShareGroupState (v0) over akfak/peers.py; the group
coordinator's offset admin (Describe/Alter/DeleteShareGroupOffsets) asks it with
ReadShareGroupStateSummary, InitializeShareGroupState and DeleteShareGroupState, as Kafka's.
As Kafka's persister does, a request refused while the coordinator moves or loads (NOT_COORDINATOR,
COORDINATOR_NOT_AVAILABLE, COORDINATOR_LOAD_IN_PROGRESS, a lost connection) is sent again,
to wherever the coordinator is then, every `RETRY_S` for up to `GIVE_UP_S`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kio.schema.errors import ErrorCode
from kio.static.primitive import i8, i16, i32, i64
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.python.failure import Failure

from akfak.errors import KafkaError
from akfak.share.coordinator import SHARE_STATE_TOPIC, ShareCoordinator, ShareStateError
from akfak.share.records import ShareKey, ShareState, StateBatch

if TYPE_CHECKING:
    from akfak.broker import Broker

RETRY_S = 0.2
GIVE_UP_S = 30.0
RETRIABLE = {ErrorCode.not_coordinator.value, ErrorCode.coordinator_not_available.value,
             ErrorCode.coordinator_load_in_progress.value, ErrorCode.not_leader_or_follower.value}


def _module(name: str) -> Any:
    return importlib.import_module(f"kio.schema.{name}.v0.request")


class SharePersister:
    def __init__(self, broker: Broker, coordinator: ShareCoordinator) -> None:
        self.broker = broker
        self.coordinator = coordinator

    def _leader(self, key: ShareKey) -> int | None:
        """The broker coordinating `key`: None for this one (or one broker)."""
        if self.broker.cluster is None or self.broker.peers is None:
            return None
        p = self.broker.image.partition(SHARE_STATE_TOPIC, self.coordinator.partition_for(key))
        if p is None or p.leader == self.broker.node_id:
            return None  # (a topic not created yet: the local coordinator creates it)
        return int(p.leader)

    def _call(self, key: ShareKey, local: Callable[[], Any], remote: Callable[[int], Any]
              ) -> Deferred[Any]:
        """local() or remote(leader), again while the coordinator is not available."""
        clock = self.broker.clock
        deadline = clock.seconds() + GIVE_UP_S
        done: Deferred[Any] = Deferred()

        def attempt() -> None:
            leader = self._leader(key)
            maybeDeferred(local if leader is None else lambda: remote(leader)).addCallbacks(
                done.callback, failed)

        def failed(f: Failure) -> None:
            # a Kafka error by its code; anything else is the connection (lost, timed out)
            retriable = (f.value.error_code in RETRIABLE if isinstance(f.value, KafkaError)
                         else True)
            if retriable and clock.seconds() < deadline and self.broker.cluster is not None:
                clock.callLater(RETRY_S, attempt)
            else:
                done.errback(f)

        attempt()
        return done

    def _send(self, leader: int, request: Any, results: Callable[[Any], Any]) -> Deferred[Any]:
        """The one partition result of a response, raising its error."""
        assert self.broker.peers is not None

        def answer(response: Any) -> Any:
            (result,) = results(response)[0].partitions
            if int(result.error_code) != 0:
                raise ShareStateError(ErrorCode(int(result.error_code)), result.error_message or "")
            return result

        return self.broker.peers.send(leader, request).addCallback(answer)

    def read(self, key: ShareKey, leader_epoch: int) -> Deferred[ShareState | None]:
        """The key's state, None if it was never initialized."""
        def remote(leader: int) -> Deferred[ShareState | None]:
            m = _module("read_share_group_state")
            request = m.ReadShareGroupStateRequest(group_id=key.group_id, topics=(m.ReadStateData(
                topic_id=key.topic_id, partitions=(m.PartitionData(
                    partition=i32(key.partition), leader_epoch=i32(leader_epoch)),)),))

            def state(result: Any) -> ShareState:
                return ShareState(state_epoch=int(result.state_epoch),
                                  start_offset=int(result.start_offset),
                                  batches=[StateBatch(int(b.first_offset), int(b.last_offset),
                                                      int(b.delivery_state), int(b.delivery_count))
                                           for b in result.state_batches])

            def uninitialized(f: Failure) -> None:
                f.trap(ShareStateError)
                if f.value.error_code != ErrorCode.invalid_request.value:
                    return f  # type: ignore[return-value]
                return None

            return self._send(leader, request, lambda r: r.results).addCallbacks(
                state, uninitialized)

        return self._call(key, lambda: self.coordinator.read(key), remote)

    def initialize(self, key: ShareKey, state_epoch: int, start_offset: int) -> Deferred[None]:
        def remote(leader: int) -> Deferred[None]:
            m = _module("initialize_share_group_state")
            request = m.InitializeShareGroupStateRequest(
                group_id=key.group_id, topics=(m.InitializeStateData(
                    topic_id=key.topic_id, partitions=(m.PartitionData(
                        partition=i32(key.partition), state_epoch=i32(state_epoch),
                        start_offset=i64(start_offset)),)),))
            return self._send(leader, request, lambda r: r.results).addCallback(lambda _: None)

        return self._call(key, lambda: self.coordinator.initialize(key, state_epoch, start_offset),
                          remote)

    def write(self, key: ShareKey, state_epoch: int, leader_epoch: int, start_offset: int,
              batches: list[StateBatch]) -> Deferred[None]:
        def remote(leader: int) -> Deferred[None]:
            m = _module("write_share_group_state")
            request = m.WriteShareGroupStateRequest(group_id=key.group_id, topics=(
                m.WriteStateData(topic_id=key.topic_id, partitions=(m.PartitionData(
                    partition=i32(key.partition), state_epoch=i32(state_epoch),
                    leader_epoch=i32(leader_epoch), start_offset=i64(start_offset),
                    state_batches=tuple(m.StateBatch(
                        first_offset=i64(b.first_offset), last_offset=i64(b.last_offset),
                        delivery_state=i8(b.delivery_state), delivery_count=i16(b.delivery_count))
                        for b in batches)),)),))
            return self._send(leader, request, lambda r: r.results).addCallback(lambda _: None)

        return self._call(key, lambda: self.coordinator.write(
            key, state_epoch, leader_epoch, start_offset, batches), remote)

    def summary(self, key: ShareKey) -> Deferred[ShareState | None]:
        """The key's state epoch, leader epoch and start offset (no batches), None if the
        coordinator has no state for it."""
        def remote(leader: int) -> Deferred[ShareState | None]:
            m = _module("read_share_group_state_summary")
            request = m.ReadShareGroupStateSummaryRequest(group_id=key.group_id, topics=(
                m.ReadStateSummaryData(topic_id=key.topic_id, partitions=(m.PartitionData(
                    partition=i32(key.partition), leader_epoch=i32(-1)),)),))

            def state(result: Any) -> ShareState:
                return ShareState(state_epoch=int(result.state_epoch),
                                  leader_epoch=int(result.leader_epoch),
                                  start_offset=int(result.start_offset))

            def missing(f: Failure) -> None:
                f.trap(ShareStateError)
                if f.value.error_code != ErrorCode.unknown_topic_or_partition.value:
                    return f  # type: ignore[return-value]
                return None

            return self._send(leader, request, lambda r: r.results).addCallbacks(state, missing)

        return self._call(key, lambda: self.coordinator.read(key), remote)

    def delete(self, key: ShareKey) -> Deferred[None]:
        def remote(leader: int) -> Deferred[None]:
            m = _module("delete_share_group_state")
            request = m.DeleteShareGroupStateRequest(group_id=key.group_id, topics=(
                m.DeleteStateData(topic_id=key.topic_id, partitions=(
                    m.PartitionData(partition=i32(key.partition)),)),))
            return self._send(leader, request, lambda r: r.results).addCallback(lambda _: None)

        return self._call(key, lambda: self.coordinator.delete(key), remote)
