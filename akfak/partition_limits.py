"""How many partitions one request may create, and how many the broker may hold.

Kafka 4 has no partition-count config (KIP-578's `max.partitions` was never
adopted), but its controller refuses an operation that would write more than
10,000 records (QuorumController.MAX_RECORDS_PER_USER_OP): the whole request
answers POLICY_VIOLATION "Unable to perform excessively large batch
operation.".  akfak bounds the same thing by partitions, before any work:

- `akfak.max.partitions.per.request` (10,000): more new partitions in one
  CreateTopics or CreatePartitions request answer POLICY_VIOLATION for every
  topic of the request, as Kafka does.
- `akfak.max.partitions` (100,000): a topic that would take the broker past
  it answers INVALID_PARTITIONS; the topics before it are created.  At about
  0.5 ms and a few KB per partition to open at start, that is a broker that
  still starts in about a minute.

A fuzzed count of 2^31 meets the first; a normal user meets neither.
"""

from __future__ import annotations

from akfak.config import BrokerConfig
from akfak.errors import InvalidPartitions, PolicyViolation

MAX_PARTITIONS_PER_REQUEST = "akfak.max.partitions.per.request"
MAX_PARTITIONS = "akfak.max.partitions"


def check_request(config: BrokerConfig, added: int) -> None:
    """POLICY_VIOLATION when one request would create more than the per-request limit."""
    limit = config.get_int(MAX_PARTITIONS_PER_REQUEST)
    if added > limit:
        raise PolicyViolation(
            f"Unable to perform excessively large batch operation: {added} new partitions "
            f"in one request, more than {MAX_PARTITIONS_PER_REQUEST}={limit}.")


def check_broker(config: BrokerConfig, existing: int, added: int) -> None:
    """INVALID_PARTITIONS when `added` more partitions would pass the broker-wide limit."""
    limit = config.get_int(MAX_PARTITIONS)
    if existing + added > limit:
        raise InvalidPartitions(
            f"Adding {added} partitions to the {existing} this broker holds would exceed "
            f"{MAX_PARTITIONS}={limit}.")
