"""UnregisterBroker (key 64) v0, AddRaftVoter (80) v0, RemoveRaftVoter (81) v0: changes to
the cluster's membership, which a one-node akfak cluster cannot make.

Behavior (as Kafka 4's controller on a one-node cluster whose metadata log is at
kraft.version 0, a static quorum, which is what akfak writes):
- UnregisterBroker: an id that is not this node answers BROKER_ID_NOT_REGISTERED "Broker ID N
  is not currently registered" (ReplicationControlManager.unregisterBroker). This node's own
  id answers NONE: Kafka would drop its registration, and the live broker registers again at
  its next heartbeat; akfak's registration never lapses.
- AddRaftVoter / RemoveRaftVoter: UNSUPPORTED_VERSION "Cluster doesn't support adding (removing)
  voter because the kraft.version feature is 0" (AddVoterHandler, RemoveVoterHandler), the
  first check Kafka makes past its pending-change and high-watermark checks.
- ACLs: ALTER on the cluster, else CLUSTER_AUTHORIZATION_FAILED.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from akfak.handlers.base import NO_THROTTLE, Handler
from akfak.protocol import RequestContext
from akfak.security.acls import ALTER
from akfak.security.checks import DENIED_MESSAGES, access


class _ClusterChange(Handler):
    def answer(self, context: RequestContext, error: ErrorCode, message: str | None) -> Any:
        if not access(context).cluster(ALTER):
            error, message = ErrorCode.cluster_authorization_failed, DENIED_MESSAGES[31]
        return self.response_type(context.api_version)(
            throttle_time=NO_THROTTLE, error_code=error, error_message=message)


class UnregisterBrokerHandler(_ClusterChange):
    api_key = 64
    min_version = 0
    max_version = 0

    def handle(self, request: Any, context: RequestContext) -> Any:
        broker_id = int(request.broker_id)
        if broker_id == self.broker.node_id:
            return self.answer(context, ErrorCode.none, None)
        return self.answer(context, ErrorCode.broker_id_not_registered,
                           f"Broker ID {broker_id} is not currently registered")


class AddRaftVoterHandler(_ClusterChange):
    api_key = 80
    min_version = 0
    max_version = 0  # what Kafka 4.1.1's broker listener advertises (its controllers take v1)
    verb = "adding"

    def handle(self, request: Any, context: RequestContext) -> Any:
        return self.answer(context, ErrorCode.unsupported_version,
                           f"Cluster doesn't support {self.verb} voter because the kraft.version "
                           "feature is 0")


class RemoveRaftVoterHandler(AddRaftVoterHandler):
    api_key = 81
    verb = "removing"


HANDLERS = (UnregisterBrokerHandler, AddRaftVoterHandler, RemoveRaftVoterHandler)
