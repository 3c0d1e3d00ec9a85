"""Consumer groups: the classic and the consumer group protocols, and committed offsets.

- `coordinator.py`: GroupCoordinator, the operations (join, sync, heartbeat, leave,
  list, describe, delete, commit, fetch, delete offsets, expiry) and loading;
- `group.py`: a classic group's state and members;
- `offsets.py`: committed offsets and their expiry;
- `records.py`: `__consumer_offsets` keys and values (Kafka's formats; the record batches
  around them are akfak.log.records');
- `txn_offsets.py`: offsets committed in transactions, pending until their markers;
- `consumer_protocol.py`: the subscription topics of "consumer" groups;
- `results.py`: the version-independent answers handlers encode;
- the consumer group protocol (KIP-848): `consumer_coordinator.py` (heartbeats, fencing,
  deletion), `consumer_requests.py` (a heartbeat's request, answer and checks),
  `consumer_offsets.py` (offset checks, deletion records, expiry), `consumer_writes.py`
  (state applied before its write, undone if it fails), `consumer_group.py` (a group's
  state, built by replaying its records), `consumer_records.py` (their `__consumer_offsets`
  formats), `reconcile.py` (a member's way to its target), `assignors.py` (uniform, range),
  `consumer_topics.py` (metadata, regexes, the metadata hash).
"""
