"""Consumer groups: the classic group protocol and committed offsets.

- `coordinator.py`: GroupCoordinator, the operations (join, sync, heartbeat, leave,
  list, describe, delete, commit, fetch, delete offsets, expiry) and loading;
- `group.py`: a classic group's state and members;
- `offsets.py`: committed offsets and their expiry;
- `records.py`: `__consumer_offsets` keys and values (Kafka's formats; the record batches
  around them are akfak.log.records');
- `txn_offsets.py`: offsets committed in transactions, pending until their markers;
- `consumer_protocol.py`: the subscription topics of "consumer" groups;
- `results.py`: the version-independent answers handlers encode.
"""
