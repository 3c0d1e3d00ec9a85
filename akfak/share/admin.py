"""Share groups in the group admin APIs the classic coordinator answers (akfak.handlers.groups).

As Kafka 4.1: ListGroups lists share groups with protocol type and group type "share" and
state Empty or Stable (the type filter "share" selects them); DescribeGroups answers a share
group as a group that is not classic (v6: GROUP_ID_NOT_FOUND "Group G is not a classic
group.", state Dead; older versions: no error, state Dead); DeleteGroups deletes an empty
share group with its share-partition state (NON_EMPTY_GROUP while it has members).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kio.schema.errors import ErrorCode
from twisted.internet.defer import Deferred, succeed

from akfak.groups.results import DescribedGroup, ListedGroup

GROUP_TYPE_SHARE = "share"


def _service(broker: Any) -> Any:
    return getattr(broker, "share", None)


def listed_share_groups(broker: Any, states: Iterable[str], types: Iterable[str]
                        ) -> list[ListedGroup]:
    service = _service(broker)
    if service is None:
        return []
    state_filter = {s.lower() for s in states}
    type_filter = {t.lower() for t in types}
    if type_filter and GROUP_TYPE_SHARE not in type_filter:
        return []
    return [ListedGroup(g.group_id, GROUP_TYPE_SHARE, g.state, GROUP_TYPE_SHARE)
            for g in service.groups.groups.values()
            if not state_filter or g.state.lower() in state_filter]


def describe_if_share_group(broker: Any, group_id: str, version: int) -> DescribedGroup | None:
    """DescribeGroups' answer for a share group, or None when `group_id` is not one."""
    service = _service(broker)
    if service is None or group_id not in service.groups.groups:
        return None
    if version >= 6:
        return DescribedGroup(group_id, ErrorCode.group_id_not_found, "Dead",
                              error_message=f"Group {group_id} is not a classic group.")
    return DescribedGroup(group_id, ErrorCode.none, "Dead")


def delete_share_groups(broker: Any, names: list[str]
                        ) -> tuple[list[str], Deferred[dict[str, ErrorCode]]]:
    """Delete the share groups among `names`: (the other names, their results)."""
    service = _service(broker)
    if service is None:
        return names, succeed({})
    results: dict[str, ErrorCode] = {}
    writes: list[Deferred[Any]] = []
    others = []
    for name in names:
        group = service.groups.groups.get(name)
        if group is None:
            others.append(name)
        elif group.members:
            results[name] = ErrorCode.non_empty_group
        else:
            results[name] = ErrorCode.none
            writes.append(service.delete_group(name))
    if not writes:
        return others, succeed(results)
    from twisted.internet.defer import gatherResults

    return others, gatherResults(writes, consumeErrors=True).addBoth(lambda _: results)
