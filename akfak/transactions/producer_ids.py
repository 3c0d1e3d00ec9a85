"""Producer ids: blocks reserved from the metadata controller, handed out one by one."""

from __future__ import annotations

from collections.abc import Callable

from twisted.logger import Logger

from akfak.metadata_image import PRODUCER_ID_BLOCK_SIZE

log = Logger()


class ProducerIdManager:
    """Hands out producer ids from blocks the controller reserves (Kafka's
    RPCProducerIdManager, with the controller in the same process)."""

    def __init__(self, allocate: Callable[[int], int], block_size: int = PRODUCER_ID_BLOCK_SIZE):
        self._allocate = allocate
        self.block_size = block_size
        self._next = 0
        self._end = 0  # an empty block: the first id reserves one

    def generate(self) -> int:
        if self._next >= self._end:
            first = self._allocate(self.block_size)
            self._next, self._end = first, first + self.block_size
            log.info("Reserved producer ids {first}..{last}", first=first, last=self._end - 1)
        producer_id = self._next
        self._next += 1
        return producer_id


