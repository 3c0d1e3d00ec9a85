"""`__consumer_offsets` on the broker's storage: an IOffsetsTopic over partition logs.

The topic is created through the metadata controller, as Kafka creates it on
first use: `offsets.topic.num.partitions` partitions, one replica (a single
node), `cleanup.policy=compact`, `segment.bytes=offsets.topic.segment.bytes` and
`compression.type=producer` (the coordinator's own batches are uncompressed).
"""

from __future__ import annotations

import contextlib
from typing import Any

from zope.interface import implementer

from akfak.config import BrokerConfig
from akfak.errors import TopicAlreadyExists
from akfak.groups.store import OFFSETS_TOPIC, IOffsetsTopic


def offsets_topic_configs(config: BrokerConfig) -> dict[str, str | None]:
    """The topic configs Kafka gives `__consumer_offsets` (GroupCoordinator.offsetsTopicConfigs)."""
    return {
        "cleanup.policy": "compact",
        "segment.bytes": str(config.get_int("offsets.topic.segment.bytes")),
        "compression.type": "producer",
    }


@implementer(IOffsetsTopic)
class LogOffsetsTopic:
    """The offsets topic as partition logs of `storage`, created by `controller`."""

    def __init__(self, controller: Any, storage: Any, config: BrokerConfig):
        self.controller = controller
        self.storage = storage
        self.config = config

    def num_partitions(self) -> int | None:
        topic = self.controller.image.topic(OFFSETS_TOPIC)
        return None if topic is None else int(topic.num_partitions)

    def create(self, num_partitions: int) -> None:
        if self.num_partitions() is not None:
            return
        with contextlib.suppress(TopicAlreadyExists):
            self.controller.create_topic(OFFSETS_TOPIC, num_partitions, 1,
                                         offsets_topic_configs(self.config))

    def _log(self, partition: int) -> Any:
        partition_log = self.storage.get_log(OFFSETS_TOPIC, partition)
        if partition_log is None:
            raise KeyError(f"{OFFSETS_TOPIC}-{partition} has no log")
        return partition_log

    def end_offset(self, partition: int) -> int:
        return int(self._log(partition).log_end_offset)

    def read(self, partition: int, offset: int, max_bytes: int) -> bytes:
        partition_log = self._log(partition)
        offset = max(offset, partition_log.log_start_offset)
        if offset >= partition_log.log_end_offset:
            return b""
        return b"".join(partition_log.read(offset, max_bytes).parts)

    def append(self, partition: int, batch: bytes, now_ms: int) -> int:
        partition_log = self._log(partition)
        image = self.controller.image.partition(OFFSETS_TOPIC, partition)
        epoch = image.leader_epoch if image is not None else max(partition_log.leader_epoch, 0)
        # Written as the coordinator, as Kafka's coordinator appends (not a client's produce).
        info = partition_log.append(batch, leader_epoch=epoch, now_ms=now_ms, origin="coordinator")
        return int(info.base_offset)
