"""What the group and the transaction coordinator share (Kafka 4's coordinator runtime).

A coordinator is a state machine per partition of a compacted internal topic
(`__consumer_offsets`, `__transaction_state`): replayed at start, answering
requests while it appends records.

- `topic.py`: `ICoordinatorTopic`, whole record batches in and out per partition,
  and an in-memory provider (for a coordinator without a broker);
- `log_topic.py`: the topic in the broker's partition logs, created through the
  metadata controller on first use;
- `runtime.py`: `PartitionLoader` (the replay, in steps on the reactor) and
  `TopicCreator` (create once, however many ask).
"""
