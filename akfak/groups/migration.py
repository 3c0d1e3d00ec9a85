"""Online migration of a live group between the classic and the consumer (KIP-848)
protocols, as Kafka 4.1's GroupMetadataManager does it (`group.consumer.migration.policy`:
`bidirectional`, the default, `upgrade`, `downgrade` or `disabled`).

- Upgrade: a ConsumerGroupHeartbeat joining a non-empty classic group converts it, if the
  policy allows upgrades, the group uses the `consumer` protocol type, it has no more than
  `group.consumer.max.size` members, every subscription and assignment parses and no
  assignment carries user data (a custom assignor's, which would be lost); otherwise
  GROUP_ID_NOT_FOUND with Kafka's message.  Waiting JoinGroup and SyncGroup calls are
  answered REBALANCE_IN_PROGRESS.  Every classic member becomes a consumer-group member at
  epoch = the generation, Stable, owning and targeting the partitions of its classic
  assignment, with its ClassicMemberMetadata (session timeout and protocols); the group epoch
  and target epoch are the generation.  Records: the classic GroupMetadata tombstone, then
  Kafka's createConsumerGroupRecords (member subscriptions, group epoch, targets, target epoch,
  current assignments).  The joining member then bumps the epoch and a new target is computed.
- Downgrade: when members leave or are fenced and only classic members remain (at least
  one, no more than `group.max.size`, downgrades allowed), the consumer group's tombstones are
  written with a classic GroupMetadata record instead of the removal: a Stable group at
  generation = group epoch, each member assigned its target partitions (in the version of its
  subscription), which at once prepares a rebalance so every member rejoins.

Not done: Kafka's downgrade when a classic static member replaces the last consumer-protocol
static member (the group stays a consumer group until a member leaves).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

from kio.schema.errors import ErrorCode
from twisted.logger import Logger

from akfak.groups import consumer_protocol
from akfak.groups.consumer_group import STABLE, ConsumerGroup, ConsumerMember, group_record
from akfak.groups.consumer_offsets import deletion_records
from akfak.groups.consumer_protocol import MalformedSubscription
from akfak.groups.consumer_records import (
    CURRENT_MEMBER_ASSIGNMENT,
    GROUP_METADATA,
    MEMBER_METADATA,
    TARGET_ASSIGNMENT_MEMBER,
    TARGET_ASSIGNMENT_METADATA,
    ClassicMemberMetadata,
    GroupMetadataValue,
    TargetAssignmentMemberValue,
    TargetAssignmentMetadataValue,
)
from akfak.groups.consumer_requests import HeartbeatError
from akfak.groups.consumer_topics import Topics
from akfak.groups.group import ClassicGroup, GroupState, Member
from akfak.groups.records import CoordinatorRecord, GroupMetadataKey
from akfak.groups.results import JoinResult, SyncResult

if TYPE_CHECKING:
    from akfak.groups.consumer_coordinator import ConsumerGroups

log = Logger()

#: policy -> (upgrades allowed, downgrades allowed); an unknown name is `disabled`, as Kafka parses
POLICIES = {"bidirectional": (True, True), "upgrade": (True, False), "downgrade": (False, True),
            "disabled": (False, False)}


class Migration:
    def __init__(self, groups: ConsumerGroups) -> None:
        self.cg = groups
        self.gc = groups.gc
        policy = (self.gc.config.get("group.consumer.migration.policy") or "").strip().lower()
        self.upgrade_enabled, self.downgrade_enabled = POLICIES.get(policy, (False, False))

    # -- upgrade ---------------------------------------------------------------------

    def upgrade(self, classic: ClassicGroup, records: list[CoordinatorRecord]) -> ConsumerGroup:
        """Kafka's validateOnlineUpgrade and convertToConsumerGroup: the consumer group the
        classic one becomes (not registered: its records, added to `records`, make it)."""
        gid = classic.group_id
        if not self.upgrade_enabled:
            self._refuse(gid, "online upgrade is disabled")
        if not classic.uses_consumer_protocol:
            self._refuse(gid, "the group does not use the consumer embedded protocol")
        if len(classic.members) > self.cg.max_size:
            self._refuse(gid, "the group size exceeds the consumer group maximum size")
        topics = Topics(self.cg.image())
        epoch = classic.generation_id
        members = []
        for m in classic.members.values():
            protocol = classic.protocol_name or (m.protocols[0][0] if m.protocols else None)
            try:
                subscription = consumer_protocol.parse_subscription(m.metadata(protocol))
                assigned: dict = {}
                if m.assignment:
                    partitions, user_data = consumer_protocol.parse_assignment(m.assignment)
                    if user_data:
                        log.warn("Cannot upgrade classic group {group} to consumer group: userData from "
                                 "a custom assignor would be lost.", group=gid)
                        raise HeartbeatError(
                            ErrorCode.group_id_not_found,
                            f"Cannot upgrade classic group {gid} to consumer group because an "
                            f"unsupported custom assignor is in use. Please refer to the documentation "
                            f"or switch to a default assignor before re-attempting the upgrade.")
                    for topic, parts in partitions:
                        topic_id = topics.id_of(topic)
                        if topic_id is not None:
                            assigned[topic_id] = assigned.get(topic_id, frozenset()) | frozenset(parts)
            except MalformedSubscription as e:
                log.warn("Cannot upgrade classic group {group} to consumer group because the embedded "
                         "consumer protocol is malformed: {error}.", group=gid, error=e)
                raise HeartbeatError(ErrorCode.group_id_not_found,
                                     f"Cannot upgrade classic group {gid} to consumer group because the "
                                     f"embedded consumer protocol is malformed.") from None
            members.append(ConsumerMember(
                m.member_id, instance_id=m.group_instance_id, rack_id=subscription.rack_id,
                client_id=m.client_id, client_host=m.client_host,
                subscribed_topic_names=tuple(sorted(set(subscription.topics))),
                rebalance_timeout_ms=m.rebalance_timeout_ms, member_epoch=epoch,
                previous_member_epoch=epoch, state=STABLE, assigned=assigned,
                classic=ClassicMemberMetadata(m.session_timeout_ms, tuple(m.protocols))))
        names = {n for m in members for n in m.subscribed_topic_names}
        # Waiting members learn of the rebalance the joining member is about to start.
        for m in classic.members.values():
            classic.complete_join(m, JoinResult(ErrorCode.rebalance_in_progress, m.member_id))
            classic.complete_sync(m, SyncResult(ErrorCode.rebalance_in_progress))
            m.join_deferred = m.sync_deferred = None
        for kind in ("join", "sync"):
            self.gc._cancel_timer((kind, gid))
        converted = [CoordinatorRecord(GroupMetadataKey(gid), None)]
        converted += [group_record(MEMBER_METADATA, gid, m.member_id, m.subscription_value())
                      for m in members]
        converted.append(group_record(GROUP_METADATA, gid, None,
                                      GroupMetadataValue(epoch, topics.group_hash(names))))
        converted += [group_record(TARGET_ASSIGNMENT_MEMBER, gid, m.member_id,
                                   TargetAssignmentMemberValue(m.assigned)) for m in members]
        converted.append(group_record(TARGET_ASSIGNMENT_METADATA, gid, None,
                                      TargetAssignmentMetadataValue(epoch)))
        converted += [group_record(CURRENT_MEMBER_ASSIGNMENT, gid, m.member_id, m.assignment_value())
                      for m in members]
        records += converted
        group = ConsumerGroup(gid)
        for record in converted[1:]:
            group.replay(record.key, record.value)  # type: ignore[arg-type]
        group.checked_image = topics.image
        # Sessions from now, with each member's classic session timeout (a failed write leaves
        # the group classic: then these find no consumer group and do nothing).
        for m in members:
            self.cg.schedule_member_session(gid, m)
        log.info("[GroupId {group}] Converted the classic group to a consumer group.", group=gid)
        return group

    @staticmethod
    def _refuse(group_id: str, why: str) -> None:
        log.info("Cannot upgrade classic group {group} to consumer group because {why}.",
                 group=group_id, why=why)
        raise HeartbeatError(ErrorCode.group_id_not_found,
                             f"Cannot upgrade classic group {group_id} to consumer group because {why}.")

    # -- downgrade -------------------------------------------------------------------

    def may_downgrade(self, group: ConsumerGroup, leaving: Collection[str]) -> bool:
        """Kafka's validateOnlineDowngradeWithFencedMembers."""
        remaining = [m for m in group.members.values() if m.member_id not in leaving]
        if not remaining or not all(m.uses_classic_protocol for m in remaining):
            return False
        if not self.downgrade_enabled:
            log.info("Cannot downgrade consumer group {group} to classic group because the online "
                     "downgrade is disabled.", group=group.group_id)
            return False
        if len(remaining) > self.gc.max_group_size:
            log.info("Cannot downgrade consumer group {group} to classic group because its group size "
                     "is greater than classic group max size.", group=group.group_id)
            return False
        return True

    def downgrade_records(self, group: ConsumerGroup, leaving: Collection[str]) -> list[CoordinatorRecord]:
        """Kafka's convertToClassicGroup for leaving members: the consumer group's tombstones,
        then the classic group's GroupMetadata record."""
        gid = group.group_id
        topics = Topics(self.cg.image())
        classic = ClassicGroup(gid, self.gc.now_ms(), state=GroupState.STABLE,
                               generation_id=group.group_epoch, protocol_type="consumer")
        for m in group.members.values():
            if m.member_id in leaving or m.classic is None:
                continue
            classic.add(Member(m.member_id, m.instance_id, m.client_id, m.client_host,
                               m.rebalance_timeout_ms, m.classic.session_timeout_ms, "consumer",
                               m.classic.protocols))
        classic.protocol_name = classic.select_protocol()
        assignments = {}
        for member in classic.members.values():
            metadata = member.metadata(classic.protocol_name)
            try:
                version = consumer_protocol.version_of(metadata)
            except MalformedSubscription:
                version = 0
            assignments[member.member_id] = consumer_protocol.encode_assignment(
                topics.named(group.target_of(member.member_id)), version)
        return [*deletion_records(group, {}), self.gc._group_metadata_record(classic, assignments)]

    def downgraded(self, old: ConsumerGroup, classic: ClassicGroup) -> None:
        """After the downgrade's records are applied: the members keep every protocol they
        joined with (the record holds only the chosen one's metadata), get their heartbeat
        sessions, and rejoin in a rebalance."""
        for member_id in old.members:
            self.cg._cancel_timers(old.group_id, member_id)
        for member in classic.members.values():
            previous = old.members.get(member.member_id)
            if previous is not None and previous.classic is not None:
                member.protocols = previous.classic.protocols
            self.gc._reschedule_heartbeat(classic, member)
        log.info("[GroupId {group}] Converted the consumer group to a classic group.", group=classic.group_id)
        self.gc._prepare_rebalance(classic, f"Downgrade group {classic.group_id} from consumer to classic "
                                            f"for member leaving.")

