"""What a ConsumerGroupHeartbeat carries and is answered, and the checks of the request
Kafka makes before the group is looked at (GroupCoordinatorService's
throwIfConsumerGroupHeartbeatRequestIsInvalid: INVALID_REQUEST, UNSUPPORTED_ASSIGNOR, each
with Kafka's message)."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from kio.schema.errors import ErrorCode

from akfak.groups.consumer_group import LEAVE_GROUP_MEMBER_EPOCH, LEAVE_GROUP_STATIC_MEMBER_EPOCH
from akfak.groups.consumer_records import Partitions


class HeartbeatError(Exception):
    def __init__(self, code: ErrorCode, message: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class HeartbeatRequest:
    group_id: str
    member_id: str
    member_epoch: int
    instance_id: str | None = None
    rack_id: str | None = None
    rebalance_timeout_ms: int = -1
    subscribed_topic_names: tuple[str, ...] | None = None
    subscribed_topic_regex: str | None = None
    server_assignor: str | None = None
    owned: tuple[tuple[uuid.UUID | None, tuple[int, ...]], ...] | None = None
    client_id: str = ""
    client_host: str = ""


@dataclass(frozen=True, slots=True)
class HeartbeatResult:
    error: ErrorCode
    message: str | None = None
    member_id: str | None = None
    member_epoch: int = 0
    heartbeat_interval_ms: int = 0
    #: None: not sent (unchanged)
    assignment: Partitions | None = None


def new_member_id() -> str:
    """Kafka's Uuid.randomUuid().toString(): URL-safe base64 of 16 random bytes."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode("ascii")


def validate(req: HeartbeatRequest, version: int, assignor_names: Sequence[str]
             ) -> HeartbeatResult | None:
    """GroupCoordinatorService.throwIfConsumerGroupHeartbeatRequestIsInvalid."""
    def invalid(message: str, code: ErrorCode = ErrorCode.invalid_request) -> HeartbeatResult:
        return HeartbeatResult(code, message)

    if (version >= 1 or req.member_epoch > 0 or req.member_epoch == LEAVE_GROUP_MEMBER_EPOCH) \
            and not req.member_id:
        return invalid("MemberId can't be empty.")
    if not req.group_id:
        return invalid("GroupId can't be empty.")
    if req.instance_id == "":
        return invalid("InstanceId can't be empty.")
    if req.rack_id == "":
        return invalid("RackId can't be empty.")
    if req.member_epoch == 0:
        if req.rebalance_timeout_ms == -1:
            return invalid("RebalanceTimeoutMs must be provided in first request.")
        if req.owned is None or len(req.owned) != 0:
            return invalid("TopicPartitions must be empty when (re-)joining.")
        if req.subscribed_topic_names is None and req.subscribed_topic_regex is None:
            return invalid("Either SubscribedTopicNames or SubscribedTopicRegex must be "
                           "non-null when (re-)joining.")
    elif req.member_epoch == LEAVE_GROUP_STATIC_MEMBER_EPOCH:
        if req.instance_id is None:
            return invalid("InstanceId can't be null.")
    elif req.member_epoch < LEAVE_GROUP_STATIC_MEMBER_EPOCH:
        return invalid("MemberEpoch is invalid.")
    if req.server_assignor is not None and req.server_assignor not in assignor_names:
        return invalid(f"ServerAssignor {req.server_assignor} is not supported. Supported "
                       f"assignors: {', '.join(assignor_names)}.", ErrorCode.unsupported_assignor)
    return None
