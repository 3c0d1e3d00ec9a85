"""/api/groups, /api/groups/ID: consumer groups, their members and lag.

From the group coordinator's memory: state, protocol type and name, generation, members
(client id and host, their assignment decoded from the consumer protocol when the group
is a "consumer" group), each committed partition's offset, end offset and lag
(akfak.group_lag), and the lag samples of the last minutes (akfak.web.api.state).
Groups of the consumer rebalance protocol (KIP-848) are shown from their own records, as
ConsumerGroupDescribe answers: protocol type "consumer", the assignor as protocol, the
group epoch as generation, and each member's current assignment by topic name.
"""

from __future__ import annotations

import struct
from typing import Any

from akfak.group_lag import group_lags
from akfak.groups.consumer_coordinator import PROTOCOL_TYPE as CONSUMER_GROUP_PROTOCOL_TYPE
from akfak.groups.consumer_group import ConsumerGroup
from akfak.groups.consumer_protocol import CONSUMER_PROTOCOL_TYPE, MalformedSubscription, subscribed_topics
from akfak.groups.group import GroupState
from akfak.web.api import ApiError, Params, Query, Routes

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")


def decode_assignment(data: bytes) -> dict[str, list[int]] | None:
    """A ConsumerProtocolAssignment's partitions by topic (None when it is not one)."""
    try:
        if len(data) < 6 or _I16.unpack_from(data, 0)[0] < 0:
            return None
        (count,) = _I32.unpack_from(data, 2)
        pos, result = 6, {}
        for _ in range(max(count, 0)):
            (length,) = _I16.unpack_from(data, pos)
            topic = data[pos + 2 : pos + 2 + length].decode("utf-8")
            pos += 2 + length
            (n,) = _I32.unpack_from(data, pos)
            pos += 4
            result[topic] = [int(p) for p in struct.unpack_from(f">{n}i", data, pos)]
            pos += 4 * n
        return result
    except (struct.error, UnicodeDecodeError):
        return None


def _coordinator(state: Any) -> Any:
    coordinator = state.broker.group_coordinator
    if coordinator is None:
        raise ApiError(503, "the group coordinator is not running")
    return coordinator


def list_groups(state: Any, params: Params, query: Query) -> list[dict[str, Any]]:
    coordinator = _coordinator(state)
    lags: dict[str, tuple[int, int]] = {}
    for lag in group_lags(state.broker):
        total, partitions = lags.get(lag.group, (0, 0))
        lags[lag.group] = (total + lag.lag, partitions + 1)
    result = []
    modern = coordinator.consumer.groups
    for group_id in sorted(set(coordinator.groups) | set(modern) | set(coordinator.offsets)):
        group = coordinator.groups.get(group_id)
        if group is not None and group.state is GroupState.DEAD:
            continue
        total, partitions = lags.get(group_id, (0, 0))
        if group is None and group_id in modern:
            result.append({"group": group_id, "state": modern[group_id].state,
                           "protocol_type": CONSUMER_GROUP_PROTOCOL_TYPE,
                           "members": len(modern[group_id].members),
                           "lag": total, "partitions": partitions})
            continue
        result.append({
            "group": group_id,
            "state": str(group.state) if group is not None else "Empty",
            "protocol_type": (group.protocol_type or "") if group is not None else "",
            "members": len(group.members) if group is not None else 0,
            "lag": total, "partitions": partitions,
        })
    return result


def group_detail(state: Any, params: Params, query: Query) -> dict[str, Any]:
    coordinator = _coordinator(state)
    group_id = params["group"]
    group = coordinator.groups.get(group_id)
    if group is None and group_id in coordinator.consumer.groups:
        return _consumer_group_detail(state, coordinator, coordinator.consumer.groups[group_id])
    if (group is None and group_id not in coordinator.offsets) or (
            group is not None and group.state is GroupState.DEAD):
        raise ApiError(404, f"no group {group_id!r}")
    members = []
    owners: dict[tuple[str, int], str] = {}
    if group is not None:
        consumer = group.protocol_type == CONSUMER_PROTOCOL_TYPE
        for member in group.members.values():
            assignment = decode_assignment(member.assignment) if consumer else None
            subscription = None
            if consumer and group.protocol_name is not None:
                try:
                    subscription = subscribed_topics(member.metadata(group.protocol_name))
                except MalformedSubscription:
                    subscription = None
            for topic, partitions in (assignment or {}).items():
                for p in partitions:
                    owners[(topic, p)] = member.member_id
            members.append({
                "member_id": member.member_id, "group_instance_id": member.group_instance_id,
                "client_id": member.client_id, "client_host": member.client_host,
                "session_timeout_ms": member.session_timeout_ms,
                "subscription": subscription, "assignment": assignment,
            })
    partitions = [{"topic": lag.topic, "partition": lag.partition, "committed": lag.committed,
                   "end_offset": lag.end_offset, "lag": lag.lag,
                   "member_id": owners.get((lag.topic, lag.partition))}
                  for lag in group_lags(state.broker, group_id)]
    history = [{"t": t, "lag": total, "partitions": parts}
               for t, total, parts in state.sampler.lag.get(group_id, ())]
    return {
        "group": group_id,
        "state": str(group.state) if group is not None else "Empty",
        "protocol_type": (group.protocol_type or "") if group is not None else "",
        "protocol": (group.protocol_name or "") if group is not None else "",
        "generation": group.generation_id if group is not None else -1,
        "leader": group.leader_id if group is not None else None,
        "members": members,
        "partitions": partitions,
        "lag": sum(p["lag"] for p in partitions),
        "lag_history": history,
    }


def _consumer_group_detail(state: Any, coordinator: Any, group: ConsumerGroup) -> dict[str, Any]:
    """A KIP-848 group: members with their current assignment (topic ids named from the
    metadata image; a deleted topic's partitions are left out, as Kafka's describe does)."""
    image = state.broker.image
    members = []
    owners: dict[tuple[str, int], str] = {}
    for member in group.members.values():
        assignment: dict[str, list[int]] = {}
        for topic_id, partitions in member.assigned.items():
            topic = image.topic_by_id(topic_id)
            if topic is not None:
                assignment[topic.name] = sorted(partitions)
                owners.update(((topic.name, p), member.member_id) for p in partitions)
        subscription = list(member.subscribed_topic_names)
        if member.subscribed_topic_regex:
            subscription.append(member.subscribed_topic_regex)
        members.append({
            "member_id": member.member_id, "group_instance_id": member.instance_id,
            "client_id": member.client_id, "client_host": member.client_host,
            "member_epoch": member.member_epoch, "subscription": subscription,
            "assignment": dict(sorted(assignment.items())),
        })
    partitions = [{"topic": lag.topic, "partition": lag.partition, "committed": lag.committed,
                   "end_offset": lag.end_offset, "lag": lag.lag,
                   "member_id": owners.get((lag.topic, lag.partition))}
                  for lag in group_lags(state.broker, group.group_id)]
    assignor = (group.preferred_assignor(group.members.values())
                or coordinator.consumer.assignor_names[0])
    return {
        "group": group.group_id, "state": group.state,
        "protocol_type": CONSUMER_GROUP_PROTOCOL_TYPE, "protocol": assignor,
        "generation": group.group_epoch, "leader": None, "members": members,
        "partitions": partitions, "lag": sum(p["lag"] for p in partitions),
        "lag_history": [{"t": t, "lag": total, "partitions": parts}
                        for t, total, parts in state.sampler.lag.get(group.group_id, ())],
    }


def add_routes(routes: Routes) -> None:
    routes.add("GET", "groups", list_groups)
    routes.add("GET", "groups/{group}", group_detail)
