"""DescribeTransactions (65) v0 and ListTransactions (66) v0-v2: what
`kafka-transactions.sh` and the Admin clients show.

Behavior / Version notes (Kafka's TransactionCoordinator/TransactionStateManager):
- DescribeTransactions: per id its state name (Empty, Ongoing, PrepareCommit, ...),
  producer id and epoch, timeout, start time (-1 when none) and partitions; an
  unknown (or expiring) id is TRANSACTIONAL_ID_NOT_FOUND, "" INVALID_REQUEST, a
  partition still loading COORDINATOR_LOAD_IN_PROGRESS.
- ListTransactions filters by state names (unknown names are listed back in
  `unknown_state_filters`), by producer ids, v1+ by `duration_filter` (open for at
  least that many ms, only transactions that have started) and v2+ by a
  `transactional_id_pattern` (a Java regular expression; Python's `re` here).
- ACLs (as KafkaApis): DescribeTransactions answers an id the principal may not DESCRIBE
  TRANSACTIONAL_ID_AUTHORIZATION_FAILED (every other field zero) and leaves out the topics
  it may not DESCRIBE; ListTransactions lists only the ids it may DESCRIBE.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from kio.schema.errors import ErrorCode
from kio.schema.types import ProducerId
from kio.static.primitive import i16, i32, i32Timedelta

from akfak.handlers.base import NO_THROTTLE, Handler, make
from akfak.protocol import RequestContext
from akfak.security.acls import DESCRIBE, TOPIC, TRANSACTIONAL_ID
from akfak.security.checks import access
from akfak.transactions.metadata import TxnState


def _epoch_ms(ms: int) -> datetime:
    """A start time as the field carries it (-1, not null, when none)."""
    return datetime.fromtimestamp(ms / 1000, UTC)


class DescribeTransactionsHandler(Handler):
    api_key = 65
    min_version = 0
    max_version = 0

    def handle(self, request: Any, context: RequestContext) -> Any:
        module = self.response_module(context.api_version)
        coordinator = self.broker.transaction_coordinator
        states = []
        acl = access(context)
        for transactional_id in request.transactional_ids:
            if not acl.allows(DESCRIBE, TRANSACTIONAL_ID, transactional_id):
                states.append(module.TransactionState(
                    error_code=ErrorCode.transactional_id_authorization_failed,
                    transactional_id=transactional_id, transaction_state="",
                    transaction_timeout=i32Timedelta.parse(timedelta(0)),
                    transaction_start_time=_epoch_ms(0), producer_id=ProducerId(0),
                    producer_epoch=i16(0), topics=()))
                continue
            fields: dict[str, Any] = dict(
                transactional_id=transactional_id, transaction_state="",
                transaction_timeout=i32Timedelta.parse(timedelta(0)),
                transaction_start_time=_epoch_ms(-1), producer_id=ProducerId(-1),
                producer_epoch=i16(-1), topics=())
            error = ErrorCode.none
            txn = None
            if coordinator is None:
                error = ErrorCode.coordinator_not_available
            elif not transactional_id:
                error = ErrorCode.invalid_request
            else:
                error = coordinator.status(transactional_id) or ErrorCode.none
                txn = coordinator.txns.get(transactional_id) if not error else None
                if not error and (txn is None or txn.state is TxnState.DEAD):
                    error = ErrorCode.transactional_id_not_found
            if txn is not None and not error:
                by_topic: dict[str, list[int]] = {}
                for topic, partition in sorted(txn.partitions):
                    if acl.allows(DESCRIBE, TOPIC, topic):
                        by_topic.setdefault(topic, []).append(partition)
                fields.update(
                    transaction_state=txn.state.display,
                    transaction_timeout=i32Timedelta.parse(timedelta(milliseconds=txn.timeout_ms)),
                    transaction_start_time=_epoch_ms(txn.start_ms),
                    producer_id=ProducerId(txn.producer_id), producer_epoch=i16(txn.producer_epoch),
                    topics=tuple(module.TopicData(topic=t, partitions=tuple(i32(p) for p in ps))
                                 for t, ps in by_topic.items()))
            states.append(module.TransactionState(error_code=error, **fields))
        return self.response_type(context.api_version)(throttle_time=NO_THROTTLE,
                                                       transaction_states=tuple(states))


class ListTransactionsHandler(Handler):
    api_key = 66
    min_version = 0
    max_version = 2

    def handle(self, request: Any, context: RequestContext) -> Any:
        version = context.api_version
        module = self.response_module(version)
        coordinator = self.broker.transaction_coordinator
        if coordinator is None or not coordinator.active:
            return make(self.response_type(version), throttle_time=NO_THROTTLE,
                        error_code=ErrorCode.coordinator_not_available, transaction_states=())
        wanted_states = {TxnState.from_display(name) for name in request.state_filters}
        unknown = tuple(n for n in request.state_filters if TxnState.from_display(n) is None)
        pids = {int(p) for p in request.producer_id_filters}
        duration = int(getattr(request, "duration_filter", -1))
        pattern = getattr(request, "transactional_id_pattern", None)
        try:
            matcher = re.compile(pattern) if pattern else None
        except re.error:
            return make(self.response_type(version), throttle_time=NO_THROTTLE,
                        error_code=ErrorCode.invalid_request, transaction_states=())
        now = coordinator.now_ms()
        listed = []
        acl = access(context)
        for txn in coordinator.txns.values():
            if txn.state is TxnState.DEAD:
                continue
            if request.state_filters and txn.state not in wanted_states:
                continue
            if pids and txn.producer_id not in pids:
                continue
            if duration >= 0 and (txn.start_ms < 0 or now - txn.start_ms < duration):
                continue
            if matcher is not None and not matcher.fullmatch(txn.transactional_id):
                continue
            if not acl.allows(DESCRIBE, TRANSACTIONAL_ID, txn.transactional_id):
                continue
            listed.append(module.TransactionState(
                transactional_id=txn.transactional_id, producer_id=ProducerId(txn.producer_id),
                transaction_state=txn.state.display))
        return make(self.response_type(version), throttle_time=NO_THROTTLE,
                    error_code=ErrorCode.none, unknown_state_filters=unknown,
                    transaction_states=tuple(listed))


HANDLERS = (DescribeTransactionsHandler, ListTransactionsHandler)
