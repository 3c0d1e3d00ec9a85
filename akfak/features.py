"""Cluster features: what akfak supports, what a new cluster finalizes, and feature updates.

Kafka 4 finalizes feature levels in `__cluster_metadata` (FeatureLevelRecords) and every
broker advertises them in ApiVersions v3+; clients read them only there (the Java
producer uses transaction version 2 only when `transaction.version` >= 2 is finalized).
What is finalized is the data directory's truth: a new directory gets the levels Kafka
4.1's `kafka-storage format` writes (where akfak supports them), a directory Kafka or an
older akfak wrote keeps its levels until an UpdateFeatures (`kafka-features upgrade`)
raises them.  The rules below follow Kafka's FeatureControlManager and MetadataVersion.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from akfak.errors import InvalidUpdateVersion

METADATA_VERSION = "metadata.version"
KRAFT_VERSION = "kraft.version"
TRANSACTION_VERSION = "transaction.version"
GROUP_VERSION = "group.version"
ELR_VERSION = "eligible.leader.replicas.version"
SHARE_VERSION = "share.version"

# metadata.version feature levels (Kafka's MetadataVersion) that change what akfak writes.
MV_3_3_IV3 = 7  #: MetadataVersion.MINIMUM_VERSION
MV_3_4_IV0 = 8  #: RegisterBrokerRecord v2
MV_3_7_IV2 = 17  #: directory assignment: PartitionRecord v1, RegisterBrokerRecord v3
MV_3_8_IV0 = 20
MV_4_0_IV0 = 22
MV_4_0_IV1 = 23  #: ELR supported: PartitionRecord / PartitionChangeRecord v2
MV_4_0_IV2 = 24
MV_4_1_IV0 = 26
MV_4_1_IV1 = 27  #: Kafka 4.1's latest production level
LATEST_METADATA_VERSION = MV_4_1_IV1

#: Levels whose records differ from the level before (MetadataVersion's didMetadataChange):
#: a downgrade across one of them might drop metadata, so Kafka refuses it.
_METADATA_CHANGED = frozenset({7, 8, 11, 13, 14, 15, 17, 23})

_RELEASES = {7: "3.3-IV3", 8: "3.4-IV0", 9: "3.5-IV0", 10: "3.5-IV1", 11: "3.5-IV2",
             12: "3.6-IV0", 13: "3.6-IV1", 14: "3.6-IV2", 15: "3.7-IV0", 16: "3.7-IV1",
             17: "3.7-IV2", 18: "3.7-IV3", 19: "3.7-IV4", 20: "3.8-IV0", 21: "3.9-IV0",
             22: "4.0-IV0", 23: "4.0-IV1", 24: "4.0-IV2", 25: "4.0-IV3", 26: "4.1-IV0",
             27: "4.1-IV1"}


def release_name(metadata_version: int) -> str:
    """"4.1-IV1" for 27, as Kafka names metadata versions."""
    return _RELEASES.get(metadata_version, str(metadata_version))


@dataclass(frozen=True)
class Feature:
    name: str
    min_level: int
    max_level: int
    #: The level a new cluster finalizes (0: not finalized, no record).
    bootstrap: int
    #: level -> {feature: least level} that level depends on (Kafka's FeatureVersion).
    dependencies: Mapping[int, Mapping[str, int]] = field(default_factory=dict)


#: What this broker supports, in the order Kafka 4.1.1 lists them. group.version 1 is the
#: consumer group protocol (KIP-848), finalized on a new cluster as Kafka 4.1 does;
#: share.version 1 enables share groups (KIP-932, akfak.share) and, as in Kafka 4.1 (where it
#: is a preview whose bootstrap metadata version is 4.2-IV0), a new cluster does not finalize
#: it: `kafka-features upgrade --feature share.version=1` does; kraft.version 1 needs KRaft's
#: dynamic quorum, which a one-node akfak has no use for, so its metadata log holds no
#: KRaftVersion record (level 0).
SUPPORTED: tuple[Feature, ...] = (
    Feature(GROUP_VERSION, 0, 1, 1),
    Feature(KRAFT_VERSION, 0, 0, 0),
    Feature(METADATA_VERSION, MV_3_3_IV3, LATEST_METADATA_VERSION, LATEST_METADATA_VERSION),
    Feature(SHARE_VERSION, 0, 1, 0),
    Feature(TRANSACTION_VERSION, 0, 2, 2),
    Feature(ELR_VERSION, 0, 1, 1, {1: {METADATA_VERSION: MV_4_0_IV1}}),
)
BY_NAME = {f.name: f for f in SUPPORTED}


def bootstrap_levels() -> dict[str, int]:
    """The finalized levels of a new cluster (what Kafka 4.1's format writes, within akfak's
    support): metadata.version first, as Kafka's bootstrap records are ordered."""
    return {f.name: f.bootstrap for f in sorted(SUPPORTED, key=lambda f: f.name != METADATA_VERSION)
            if f.bootstrap > 0}


def finalized(levels: Mapping[str, int]) -> dict[str, int]:
    """Finalized features as ApiVersions lists them: level 0 means "not finalized"."""
    return {name: level for name, level in levels.items() if level > 0}


# -- record versions by metadata.version (Kafka's MetadataVersion.*RecordVersion) --------


def partition_record_version(metadata_version: int) -> int:
    if metadata_version >= MV_4_0_IV1:
        return 2
    return 1 if metadata_version >= MV_3_7_IV2 else 0


def register_broker_record_version(metadata_version: int) -> int:
    if metadata_version >= MV_3_7_IV2:
        return 3
    return 2 if metadata_version >= MV_3_4_IV0 else 1


# -- UpdateFeatures (FeatureControlManager.updateFeatures) ------------------------------

UPGRADE, SAFE_DOWNGRADE, UNSAFE_DOWNGRADE = 1, 2, 3


def _invalid(name: str, level: int, reason: str) -> InvalidUpdateVersion:
    return InvalidUpdateVersion(f"Invalid update version {level} for feature {name}. {reason}")


def plan_update(current: Mapping[str, int], updates: Mapping[str, tuple[int, int]],
                node_id: int) -> dict[str, int]:
    """Validate `updates` ({feature: (level, upgrade type)}) against the finalized levels
    `current`, all or nothing as Kafka's controller does; return {feature: new level} to
    record, or raise InvalidUpdateVersion for the first update that cannot be made."""
    proposed = {**current, **{name: level for name, (level, _) in updates.items()}}
    planned: dict[str, int] = {}
    for name, (level, upgrade_type) in updates.items():
        if upgrade_type not in (UPGRADE, SAFE_DOWNGRADE, UNSAFE_DOWNGRADE):
            raise _invalid(name, level, "The controller does not support the given upgrade type.")
        now = current.get(name, 0)
        if level < 0:
            raise _invalid(name, level, "A feature version cannot be less than 0.")
        feature = BY_NAME.get(name)
        supported = feature is not None and (feature.min_level <= level <= feature.max_level
                                             or (level == 0 and name != METADATA_VERSION))
        if not supported:
            if feature is None or feature.max_level == 0:
                reason = f"Local controller {node_id} does not support this feature."
            else:
                span = (str(feature.min_level) if feature.min_level == feature.max_level
                        else f"{feature.min_level}-{feature.max_level}")
                reason = f"Local controller {node_id} only supports versions {span}"
            raise _invalid(name, level, reason)
        if level < now and upgrade_type == UPGRADE:
            raise _invalid(name, level, "Can't downgrade the version of this feature without "
                                        "setting the upgrade type to either safe or unsafe downgrade.")
        if level > now and upgrade_type != UPGRADE:
            raise _invalid(name, level, "Can't downgrade to a newer version.")
        if name == METADATA_VERSION:
            _check_metadata_version(now, level, upgrade_type)
        else:
            if level >= 1 and proposed.get(METADATA_VERSION, 0) < MV_3_3_IV3:
                raise _invalid(name, level, f"{name} could not be set to {level} because it "
                                            f"depends on metadata.version={MV_3_3_IV3} "
                                            f"({release_name(MV_3_3_IV3)})")
            for dependency, least in (feature.dependencies.get(level, {}) if feature else {}).items():
                if proposed.get(dependency, 0) < least:
                    raise _invalid(name, level, f"{name} could not be set to {level} because it "
                                                f"depends on {dependency} level {least}")
        planned[name] = level
    return planned


def _check_metadata_version(now: int, level: int, upgrade_type: int) -> None:
    if level >= now:
        return
    if any(v in _METADATA_CHANGED for v in range(level + 1, now + 1)):
        if upgrade_type == UNSAFE_DOWNGRADE:
            reason = "Unsafe metadata downgrade is not supported in this version."
        else:
            reason = ("Refusing to perform the requested downgrade because it might delete "
                      "metadata information.")
        raise InvalidUpdateVersion(f"Invalid metadata.version {level}. {reason}")
