"""Wiring the group coordinator into a Broker: what `Broker.open()`/`close()` call.

    self.group_coordinator = open_group_coordinator(self)   # in open(), storage opened
    close_group_coordinator(self)                            # in close(), before storage

The coordinator keeps `__consumer_offsets` in the broker's partition logs when the
broker has storage and a metadata controller (`broker.storage`, `broker.controller`),
else in memory.  Periodic task: offset expiry every `offsets.retention.check.interval.ms`.
`__consumer_offsets` is compacted (`cleanup.policy=compact`) by the storage's log
cleaner, as every compacted topic is (akfak.log.cleaner).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from akfak.coordinator.topic import ICoordinatorTopic, MemoryCoordinatorTopic
from akfak.groups.coordinator import GroupCoordinator

if TYPE_CHECKING:
    from akfak.broker import Broker


def offsets_topic_for(broker: Broker) -> ICoordinatorTopic:
    controller = getattr(broker, "controller", None)
    storage = getattr(broker, "storage", None)
    if controller is not None and storage is not None:
        from akfak.coordinator.log_topic import (
            OFFSETS_TOPIC,
            LogCoordinatorTopic,
            offsets_topic_configs,
        )

        return LogCoordinatorTopic(
            OFFSETS_TOPIC, offsets_topic_configs(broker.config), controller, storage,
            replication_factor=broker.config.get_int("offsets.topic.replication.factor"),
            cluster=getattr(broker, "cluster", None))
    return MemoryCoordinatorTopic("__consumer_offsets")


def open_group_coordinator(broker: Broker) -> GroupCoordinator:
    """Create the coordinator, register its periodic tasks and start loading."""
    controller = getattr(broker, "controller", None)
    coordinator = GroupCoordinator(broker.config, broker.clock, offsets_topic_for(broker),
                                   image=lambda: getattr(controller, "image", None))
    interval_ms = broker.config.get_int("offsets.retention.check.interval.ms")
    broker.every(interval_ms / 1000.0, coordinator.cleanup_group_metadata)
    coordinator.start(clustered=getattr(broker, "cluster", None) is not None)
    return coordinator


def close_group_coordinator(broker: Broker) -> Any:
    coordinator: GroupCoordinator | None = getattr(broker, "group_coordinator", None)
    if coordinator is not None:
        coordinator.stop()
    return None
