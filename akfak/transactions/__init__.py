"""Transactions: the transaction coordinator and its `__transaction_state`.

- `coordinator.py`: TransactionCoordinator (InitProducerId for transactional ids,
  AddPartitionsToTxn, AddOffsetsToTxn, EndTxn, verification, timeouts, expiry);
- `metadata.py`: one transactional id's state and its transitions;
- `records.py`: `__transaction_state` keys and values (Kafka's formats);
- `service.py`: wiring it into a Broker (markers written into the partition logs).

The partition side (markers, last stable offset, `.txnindex`) is akfak.log's, the
transactional offset commits akfak.groups.txn_offsets'.
"""
