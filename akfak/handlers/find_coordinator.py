"""FindCoordinator (10), v0-v6.

Behavior / Version notes:
- Single node: this broker coordinates every group (key type 0) and every
  transactional id (key type 1); it answers its own node id and the address
  advertised on the listener the request came in on.  Key type 2 (SHARE, v6+; INVALID_REQUEST
  before, or without share groups) finds the share coordinator of a share-partition,
  "group:topicId:partition", the leader of its partition of `__share_group_state` (created on
  first use); it needs CLUSTER_ACTION (else CLUSTER_AUTHORIZATION_FAILED), as brokers' state
  persisters ask it.
- As Kafka does, asking for a group coordinator creates `__consumer_offsets` when
  it does not exist yet, and asking for a transaction coordinator
  `__transaction_state`; the answer waits until it does (COORDINATOR_NOT_AVAILABLE
  if that fails, or while the coordinator is not running).
- In a cluster (akfak/cluster.py) the coordinator of a key is the leader of its partition of
  `__consumer_offsets` / `__transaction_state` (abs(javaHashCode(key)) % partitions), as
  every broker's metadata says: any broker answers with that leader's node and endpoint on
  the listener asked through, COORDINATOR_NOT_AVAILABLE while the partition has no live
  leader.  A broker asked for keys it no longer coordinates answers NOT_COORDINATOR, and the
  client asks FindCoordinator again.
- v0 has no key type (a group); v0-v3 ask for one key, v4+ for a batch of
  `coordinator_keys` of one type and get one entry per key (KIP-699).
- A success carries error_message "NONE", as Kafka's Errors.NONE.message() does.
- ACLs: DESCRIBE on the group (else GROUP_AUTHORIZATION_FAILED) or on the transactional id
  (else TRANSACTIONAL_ID_AUTHORIZATION_FAILED), per key; no coordinator topic is created
  for a request whose keys are all refused.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode
from kio.static.primitive import i32
from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure

from akfak.groups.records import partition_for
from akfak.handlers.base import NO_THROTTLE, Handler, make
from akfak.handlers.groups import coordinator_of
from akfak.handlers.share_groups import share_service
from akfak.protocol import RequestContext
from akfak.security.acls import CLUSTER_ACTION, DESCRIBE, GROUP, TRANSACTIONAL_ID
from akfak.security.checks import DENIED_MESSAGES, access

KEY_TYPE_GROUP = 0
KEY_TYPE_TRANSACTION = 1
KEY_TYPE_SHARE = 2
#: per key type: the resource DESCRIBE is checked on and the error
_DENIED = {
    KEY_TYPE_GROUP: (GROUP, ErrorCode.group_authorization_failed),
    KEY_TYPE_TRANSACTION: (TRANSACTIONAL_ID, ErrorCode.transactional_id_authorization_failed),
}


class FindCoordinatorHandler(Handler):
    api_key = 10
    min_version = 0
    max_version = 6

    def handle(self, request: Any, context: RequestContext) -> Deferred[Any]:
        version = context.api_version
        key_type = int(getattr(request, "key_type", KEY_TYPE_GROUP))
        keys = list(request.coordinator_keys) if version >= 4 else [request.key]
        denied: set[str] = set()
        if key_type in _DENIED:
            resource, denial = _DENIED[key_type]
            acl = access(context)
            denied = {key for key in keys if not acl.allows(DESCRIBE, resource, key)}
        elif key_type == KEY_TYPE_SHARE and version >= 6 \
                and not access(context).cluster(CLUSTER_ACTION):
            denied, denial = set(keys), ErrorCode.cluster_authorization_failed
        ready = self._ready(key_type, version) if set(keys) - denied else succeed(ErrorCode.none)

        def respond(error: ErrorCode) -> Any:
            def entry(key: str) -> dict[str, Any]:
                if key in denied:
                    return dict(node_id=i32(-1), host="", port=i32(-1), error_code=denial,
                                error_message=DENIED_MESSAGES.get(denial) if version < 4 else None)
                found, node, (host, port) = error, self.broker.node_id, \
                    self.broker.advertised_address(context.listener)
                if found is ErrorCode.none and self.broker.cluster is not None:
                    found, node, (host, port) = self._leader(key_type, key, context.listener)
                if found is not ErrorCode.none:
                    return dict(node_id=i32(-1), host="", port=i32(-1), error_code=found,
                                error_message=found.name)
                return dict(node_id=i32(node), host=host, port=i32(port), error_code=found,
                            error_message="NONE")

            if version < 4:
                return make(self.response_type(version), throttle_time=NO_THROTTLE,
                            **entry(keys[0]))
            coordinator_type = self.response_module(version).Coordinator
            return make(self.response_type(version), throttle_time=NO_THROTTLE, coordinators=tuple(
                make(coordinator_type, key=key, **entry(key)) for key in keys))

        return ready.addCallback(respond)

    def _leader(self, key_type: int, key: str, listener: str
                ) -> tuple[ErrorCode, int, tuple[str, int]]:
        """The cluster's coordinator of `key`: the leader of the key's partition."""
        coordinator = self._coordinator(key_type)
        unavailable = (ErrorCode.coordinator_not_available, -1, ("", -1))
        topic = self.broker.image.topic(coordinator.store.name)
        if topic is None or not topic.num_partitions:
            return unavailable
        p = topic.partitions.get(partition_for(key, int(topic.num_partitions)))
        if p is None or p.leader < 0:
            return unavailable
        if p.leader == self.broker.node_id:
            return ErrorCode.none, p.leader, self.broker.advertised_address(listener)
        endpoint = self.broker.cluster.endpoint(p.leader, listener)  # type: ignore[union-attr]
        return unavailable if endpoint is None else (ErrorCode.none, p.leader, endpoint)

    def _coordinator(self, key_type: int) -> Any:
        if key_type == KEY_TYPE_TRANSACTION:
            return self.broker.transaction_coordinator
        if key_type == KEY_TYPE_SHARE:
            return self.broker.share.coordinator
        return self.broker.group_coordinator

    def _ready(self, key_type: int, version: int) -> Deferred[ErrorCode]:
        if key_type == KEY_TYPE_TRANSACTION:
            coordinator: Any = self.broker.transaction_coordinator
        elif key_type == KEY_TYPE_GROUP:
            coordinator = coordinator_of(self.broker)
        elif key_type == KEY_TYPE_SHARE and version >= 6 and share_service(self.broker):
            coordinator = self.broker.share.coordinator
        else:
            return succeed(ErrorCode.invalid_request)
        if coordinator is None:
            return succeed(ErrorCode.coordinator_not_available)

        def failed(failure: Failure) -> ErrorCode:
            return ErrorCode.coordinator_not_available

        return coordinator.ensure_topic().addCallbacks(lambda _: ErrorCode.none, failed)


HANDLERS = (FindCoordinatorHandler,)
