"""The transaction coordinator, as Apache Kafka's TransactionCoordinator runs it.

One coordinator serves every transactional id of a single broker; in a cluster, those of
the `__transaction_state` partitions this broker leads (others: NOT_COORDINATOR).  Its
state is one `TransactionMetadata` per transactional id, kept in
`__transaction_state` (partition = abs(javaHashCode(id)) % 50) in Kafka's record
formats and replayed at start on the coordinator runtime (akfak.coordinator):
until a partition is loaded, its ids answer COORDINATOR_LOAD_IN_PROGRESS.

A transaction: InitProducerId gives the id a producer id and epoch (bumping the
epoch fences older producers; an Ongoing transaction is first aborted and the
client told CONCURRENT_TRANSACTIONS to retry); AddPartitionsToTxn and
AddOffsetsToTxn move it to Ongoing with its partitions; EndTxn writes
PrepareCommit/PrepareAbort, answers, writes the COMMIT/ABORT markers to every
partition (on one node: straight into the partition logs, `write_markers`) and
then CompleteCommit/CompleteAbort.  With transaction version 2 (KIP-890) every
EndTxn also bumps the epoch, and a Produce adds its partition implicitly.

Timers: transactions Ongoing for longer than their timeout are aborted (epoch
fenced) every `transaction.abort.timed.out.transaction.cleanup.interval.ms`;
ids idle for `transactional.id.expiration.ms` in Empty/Complete states are
removed (a tombstone) every `transaction.remove.expired.transaction.cleanup.interval.ms`.
A coordinator that stopped with transactions Prepare* completes them after loading.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from kio.schema.errors import ErrorCode
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from akfak.config import BrokerConfig
from akfak.coordinator.codec import RecordFormatError
from akfak.coordinator.runtime import LoadingCoordinator, PartitionLoader, TopicCreator, append_error
from akfak.coordinator.topic import ICoordinatorTopic
from akfak.groups.records import partition_for
from akfak.log.batch import BatchHeader
from akfak.log.producer_state import is_epoch_exhausted
from akfak.log.records import encode_batch, iter_records
from akfak.transactions.metadata import (
    NO_PRODUCER_EPOCH,
    NO_PRODUCER_ID,
    TopicPartition,
    TransactionMetadata,
    TxnState,
    TxnTransit,
)
from akfak.transactions.records import decode_key, decode_value, encode_key, encode_value

log = Logger()

#: write_markers(producer id, epoch, commit, coordinator epoch, partitions)
#: (None, or a Deferred firing once they are written: a cluster's markers go to other brokers)
WriteMarkers = Callable[[int, int, bool, int, Iterable[TopicPartition]], Deferred[None] | None]
#: (error, producer id, epoch) as InitProducerId and EndTxn answer
IdResult = tuple[ErrorCode, int, int]

_FAIL = (NO_PRODUCER_ID, NO_PRODUCER_EPOCH)


class TransactionCoordinator(LoadingCoordinator):
    LOADING = "transactions"

    def __init__(self, config: BrokerConfig, clock: Any, store: ICoordinatorTopic,
                 new_producer_id: Callable[[], int], write_markers: WriteMarkers) -> None:
        self.config = config
        self.clock = clock
        self.store = store
        self.new_producer_id = new_producer_id
        self.write_markers = write_markers
        self.num_partitions = config.get_int("transaction.state.log.num.partitions")
        self.max_timeout_ms = config.get_int("transaction.max.timeout.ms")
        self.expiration_ms = config.get_int("transactional.id.expiration.ms")
        self.txns: dict[str, TransactionMetadata] = {}
        self.active = False
        self.loader = PartitionLoader(clock, store, self._replay_batch, self._partition_loaded,
                                      lambda: self.active)
        self.creator = TopicCreator(store, lambda: self.num_partitions)
        self.loaded: Deferred[None] = Deferred()

    # -- lifecycle, loading ------------------------------------------------------------


    def stop(self) -> None:
        self.active = False

    def partition_for(self, transactional_id: str) -> int:
        return partition_for(transactional_id, self.num_partitions)

    def ensure_topic(self) -> Deferred[None]:
        return self.creator.ensure()

    def status(self, transactional_id: str) -> ErrorCode | None:
        """NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE, COORDINATOR_LOAD_IN_PROGRESS, or
        None: served."""
        return self.key_status(self.partition_for(transactional_id))

    def _unload(self, partition: int) -> None:
        """Forget the transactional ids of `partition` (another broker coordinates them
        now; it completes what was being completed when it loads them)."""
        for transactional_id in [t for t in self.txns if self.partition_for(t) == partition]:
            del self.txns[transactional_id]

    def _replay_batch(self, partition: int, header: BatchHeader, batch: memoryview) -> None:
        if header.is_control:
            return
        for record in iter_records(batch):
            if record.key is None:
                continue
            try:
                transactional_id = decode_key(record.key)
                if record.value is None:
                    self.txns.pop(transactional_id, None)
                else:
                    self.txns[transactional_id] = TransactionMetadata.from_value(
                        transactional_id, decode_value(record.value))
            except RecordFormatError as e:
                log.warn("Skipping an unreadable record in __transaction_state-{p}: {e}",
                         p=partition, e=e)

    def _partition_loaded(self, partition: int) -> None:
        # Kafka's loading: transactions that were being completed are completed now.
        for txn in list(self.txns.values()):
            if (self.partition_for(txn.transactional_id) == partition
                    and txn.state in (TxnState.PREPARE_COMMIT, TxnState.PREPARE_ABORT)):
                log.info("Completing the {state} of {id} found at load",
                         state=txn.state.display, id=txn.transactional_id)
                self._complete(txn)
        if not self.loader.loading and not self.loaded.called:
            log.info("Loaded {n} transactional ids", n=len(self.txns))
            self.loaded.callback(None)

    # -- writing -----------------------------------------------------------------------

    def _write(self, txn: TransactionMetadata, transit: TxnTransit) -> Deferred[ErrorCode]:
        """Write `transit` to the log; once it is there it becomes the state."""
        key = encode_key(txn.transactional_id)
        value = None if transit.state is TxnState.DEAD else encode_value(transit.to_value())
        batch = encode_batch([(key, value)], timestamp=self.now_ms())
        partition = self.partition_for(txn.transactional_id)

        def written(_: Any) -> ErrorCode:
            txn.complete_transition(transit)
            return ErrorCode.none

        def failed(failure: Failure) -> ErrorCode:
            txn.abort_transition()
            log.warn("Writing the state of {id} failed: {e}", id=txn.transactional_id,
                     e=failure.getErrorMessage())
            return append_error(failure)

        done = self.ensure_topic().addCallback(
            lambda _: self.store.append(partition, batch, self.now_ms()))
        return done.addCallbacks(written, failed)

    def _coordinator_epoch(self, txn: TransactionMetadata) -> int:
        return int(self.store.leader_epoch(self.partition_for(txn.transactional_id)))

    # -- InitProducerId ----------------------------------------------------------------

    def init_producer_id(self, transactional_id: str, timeout_ms: int,
                         expected: tuple[int, int] | None) -> Deferred[IdResult]:
        if not 0 < timeout_ms <= self.max_timeout_ms:
            return succeed((ErrorCode.invalid_transaction_timeout, *_FAIL))
        error = self.status(transactional_id)
        if error is not None:
            return succeed((error, *_FAIL))
        now = self.now_ms()
        txn = self.txns.get(transactional_id)
        if txn is None:
            txn = self.txns[transactional_id] = TransactionMetadata(
                transactional_id, self.new_producer_id(), timeout_ms=timeout_ms,
                last_update_ms=now)
        if txn.pending is not None:
            return succeed((ErrorCode.concurrent_transactions, *_FAIL))
        if expected is not None and not (
                txn.producer_epoch == NO_PRODUCER_EPOCH or expected[0] == txn.producer_id
                or (expected[0] == txn.previous_producer_id and is_epoch_exhausted(expected[1]))):
            return succeed((ErrorCode.producer_fenced, *_FAIL))
        if txn.state in (TxnState.PREPARE_COMMIT, TxnState.PREPARE_ABORT):
            return succeed((ErrorCode.concurrent_transactions, *_FAIL))
        if txn.state is TxnState.ONGOING:
            # Abort the ongoing transaction with a fenced epoch; the client retries.
            fence = txn.prepare_fence_epoch(now)

            def aborted(result: IdResult) -> IdResult:
                error = result[0]
                return (ErrorCode.concurrent_transactions if error is ErrorCode.none
                        else error, *_FAIL)

            return self._end(txn, fence.producer_id, fence.producer_epoch, False,
                             from_client=False, fence=fence).addCallback(aborted)
        if txn.epoch_exhausted and (expected is None or expected[1] == txn.producer_epoch):
            transit = txn.prepare_producer_id_rotation(self.new_producer_id(), timeout_ms, now,
                                                       expected is not None)
        else:
            bumped = txn.prepare_increment_epoch(timeout_ms,
                                                 None if expected is None else expected[1], now)
            if bumped is None:
                return succeed((ErrorCode.producer_fenced, *_FAIL))
            transit = bumped

        def answer(error: ErrorCode) -> IdResult:
            if error is not ErrorCode.none:
                return (error, *_FAIL)
            log.info("Initialized transactional id {id} with producer id {pid} and epoch {epoch}",
                     id=transactional_id, pid=txn.producer_id, epoch=txn.producer_epoch)
            return (ErrorCode.none, txn.producer_id, txn.producer_epoch)

        return self._write(txn, transit).addCallback(answer)

    # -- AddPartitionsToTxn, AddOffsetsToTxn ----------------------------------------------

    def _check_producer(self, transactional_id: str, producer_id: int, epoch: int
                        ) -> tuple[ErrorCode | None, TransactionMetadata | None]:
        if not transactional_id:
            return ErrorCode.invalid_request, None
        error = self.status(transactional_id)
        if error is not None:
            return error, None
        txn = self.txns.get(transactional_id)
        if txn is None or txn.producer_id != producer_id:
            return ErrorCode.invalid_producer_id_mapping, None
        if txn.producer_epoch != epoch:
            return ErrorCode.producer_fenced, None
        return None, txn

    def add_partitions(self, transactional_id: str, producer_id: int, epoch: int,
                       partitions: set[TopicPartition], *, client_version: int = 0
                       ) -> Deferred[ErrorCode]:
        error, txn = self._check_producer(transactional_id, producer_id, epoch)
        if error is not None or txn is None:
            return succeed(error or ErrorCode.unknown_server_error)
        if txn.pending is not None or txn.state in (TxnState.PREPARE_COMMIT,
                                                     TxnState.PREPARE_ABORT):
            return succeed(ErrorCode.concurrent_transactions)
        if txn.state is TxnState.ONGOING and partitions <= txn.partitions:
            return succeed(ErrorCode.none)
        return self._write(txn, txn.prepare_add_partitions(partitions, self.now_ms(),
                                                           client_version))

    def verify(self, transactional_id: str, producer_id: int, epoch: int,
               partitions: Iterable[TopicPartition]) -> dict[TopicPartition, ErrorCode]:
        """KIP-890 verification: is each partition in the producer's ongoing transaction
        (TRANSACTION_ABORTABLE when not)?"""
        wanted = list(partitions)
        error, txn = self._check_producer(transactional_id, producer_id, epoch)
        if error is None and txn is not None and txn.state in (TxnState.PREPARE_COMMIT,
                                                               TxnState.PREPARE_ABORT):
            error = ErrorCode.concurrent_transactions
        if error is not None or txn is None:
            return dict.fromkeys(wanted, error or ErrorCode.unknown_server_error)
        return {tp: ErrorCode.none if tp in txn.partitions and txn.state is TxnState.ONGOING
                else ErrorCode.transaction_abortable for tp in wanted}

    # -- EndTxn ------------------------------------------------------------------------

    def end_txn(self, transactional_id: str, producer_id: int, epoch: int, commit: bool, *,
                client_version: int = 0) -> Deferred[IdResult]:
        if not transactional_id:
            return succeed((ErrorCode.invalid_request, *_FAIL))
        error = self.status(transactional_id)
        if error is not None:
            return succeed((error, *_FAIL))
        txn = self.txns.get(transactional_id)
        if txn is None:
            return succeed((ErrorCode.invalid_producer_id_mapping, *_FAIL))
        return self._end(txn, producer_id, epoch, commit, from_client=True,
                         client_version=client_version)

    def _end(self, txn: TransactionMetadata, producer_id: int, epoch: int, commit: bool, *,
             from_client: bool, client_version: int = 0, fence: TxnTransit | None = None
             ) -> Deferred[IdResult]:
        """Kafka's endTransaction; `fence` is a prepared PrepareEpochFence (from
        InitProducerId or the timeout task), applied with the abort."""
        tv2 = fence is None and txn.supports_epoch_bump
        retry_on_overflow = (tv2 and txn.previous_producer_id == producer_id
                             and epoch == 32766 and txn.producer_epoch == 0)
        retry_on_bump = tv2 and txn.producer_epoch == epoch + 1
        if tv2:
            if txn.state in (TxnState.ONGOING, TxnState.EMPTY):
                valid_epoch = epoch == txn.producer_epoch
            elif txn.state in (TxnState.PREPARE_COMMIT, TxnState.PREPARE_ABORT):
                valid_epoch = retry_on_bump
            else:
                valid_epoch = retry_on_bump or retry_on_overflow
        else:
            valid_epoch = ((not from_client or epoch == txn.producer_epoch)
                           and epoch >= txn.producer_epoch)
        if fence is not None:
            valid_epoch = True
        wanted = TxnState.PREPARE_COMMIT if commit else TxnState.PREPARE_ABORT
        done = TxnState.COMPLETE_COMMIT if commit else TxnState.COMPLETE_ABORT
        if txn.producer_id != producer_id and not retry_on_overflow:
            error: ErrorCode | None = ErrorCode.invalid_producer_id_mapping
        elif not valid_epoch:
            error = ErrorCode.producer_fenced
        elif txn.pending is not None and txn.pending is not TxnState.PREPARE_EPOCH_FENCE:
            error = ErrorCode.concurrent_transactions
        elif txn.state is TxnState.ONGOING:
            error = None
        elif txn.state is done:
            return succeed((ErrorCode.none, txn.producer_id, txn.producer_epoch))
        elif txn.state is wanted:
            error = ErrorCode.concurrent_transactions
        else:
            error = ErrorCode.invalid_txn_state
        if error is not None:
            if fence is not None:
                txn.abort_transition()
            return succeed((error, *_FAIL))
        now = self.now_ms()
        # Kafka bumps the epoch by the EndTxn's version (v5: transaction version 2), not the
        # transaction's: a client on EndTxn v4 whose partitions came by AddPartitionsToTxn v5
        # (@platformatic/kafka) keeps its epoch
        version = client_version if from_client else txn.client_transaction_version
        next_id = NO_PRODUCER_ID
        if fence is not None:
            # The fence's epoch goes with the abort (Kafka clears the pending fence first).
            txn.pending = None
            txn.producer_epoch, txn.last_producer_epoch = fence.producer_epoch, NO_PRODUCER_EPOCH
            version = 0 if txn.client_transaction_version < 2 else txn.client_transaction_version
        elif version >= 2 and txn.epoch_exhausted:
            next_id = self.new_producer_id()
        transit = txn.prepare_abort_or_commit(wanted, version if fence is None else 0, next_id,
                                              now)

        def prepared(error: ErrorCode) -> IdResult:
            if error is not ErrorCode.none:
                if fence is not None:
                    txn.failed_epoch_fence = True
                return (error, *_FAIL)
            answer = (ErrorCode.none, txn.producer_id, txn.producer_epoch)
            self._complete(txn)
            return answer

        return self._write(txn, transit).addCallback(prepared)

    def _complete(self, txn: TransactionMetadata) -> Deferred[ErrorCode]:
        """Write the markers of a Prepare* transaction, then its Complete* state."""
        commit = txn.state is TxnState.PREPARE_COMMIT
        written = maybeDeferred(self.write_markers, txn.producer_id, txn.producer_epoch, commit,
                                self._coordinator_epoch(txn), sorted(txn.partitions))
        written.addErrback(lambda f: log.failure("Writing the markers of {id} failed", f,
                                                 id=txn.transactional_id))

        def complete(_: object) -> Deferred[ErrorCode]:
            if txn.pending is not None:
                return succeed(ErrorCode.concurrent_transactions)
            if self.txns.get(txn.transactional_id) is not txn:
                return succeed(ErrorCode.not_coordinator)  # unloaded meanwhile
            return self._write(txn, txn.prepare_complete(self.now_ms()))

        return written.addCallback(complete)

    # -- timers ------------------------------------------------------------------------

    def abort_timed_out_transactions(self) -> Deferred[Any]:
        """Abort (fencing the producer) every transaction open past its timeout."""
        if not self.active:
            return succeed(0)
        now = self.now_ms()
        aborts = []
        for txn in list(self.txns.values()):
            if (txn.state is TxnState.ONGOING and txn.pending is None
                    and txn.start_ms + txn.timeout_ms < now
                    and self.status(txn.transactional_id) is None):
                log.info("Aborting transaction {id} (producer id {pid}): open for longer than "
                         "its timeout of {timeout} ms", id=txn.transactional_id,
                         pid=txn.producer_id, timeout=txn.timeout_ms)
                fence = txn.prepare_fence_epoch(now)
                aborts.append(self._end(txn, fence.producer_id, fence.producer_epoch, False,
                                        from_client=False, fence=fence))
        return gatherResults(aborts, consumeErrors=True).addCallback(len)

    def expire_transactional_ids(self) -> Deferred[Any]:
        """Remove ids idle for transactional.id.expiration.ms (a tombstone each)."""
        if not self.active:
            return succeed(0)
        now = self.now_ms()
        writes = []
        for transactional_id, txn in list(self.txns.items()):
            if (txn.state.expiration_allowed and txn.pending is None
                    and txn.last_update_ms <= now - self.expiration_ms
                    and self.status(transactional_id) is None):
                def gone(error: ErrorCode, transactional_id: str = transactional_id,
                         txn: TransactionMetadata = txn) -> None:
                    if error is ErrorCode.none and self.txns.get(transactional_id) is txn:
                        del self.txns[transactional_id]

                writes.append(self._write(txn, txn.prepare_dead()).addCallback(gone))
        if writes:
            log.info("Expiring {n} transactional ids", n=len(writes))
        return gatherResults(writes, consumeErrors=True).addCallback(len)
