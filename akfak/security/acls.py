"""ACLs and the authorizer, as Kafka 4's StandardAuthorizer decides.

- An ACL binds a resource pattern (type, name, LITERAL or PREFIXED; the literal name
  "*" matches every name) to an entry (principal such as "User:alice" or "User:*",
  host or "*", operation, ALLOW or DENY).
- A request is authorized for (principal, host, operation, resource) when the
  principal is a super user (`super.users`), or some matching ALLOW ACL exists and
  no matching DENY does (DENY wins). Matching ALLOW ACLs for READ, WRITE, DELETE or
  ALTER imply DESCRIBE, ALTER_CONFIGS implies DESCRIBE_CONFIGS; a DENY denies only
  its own operation (or ALL).
- A resource that no ACL matches at all (for any principal) is allowed only with
  `allow.everyone.if.no.acl.found=true`.
- Filters (DescribeAcls, DeleteAcls) match as Kafka's AclBindingFilter: ANY matches
  every value, a null name / principal / host every one, pattern type MATCH every
  pattern that would match the given name.
The ACLs themselves live in `__cluster_metadata` as AccessControlEntryRecords; the
metadata image holds them by id.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from akfak.errors import InvalidRequest

# Kafka's ResourceType, PatternType, AclOperation and AclPermissionType codes.
UNKNOWN, ANY = 0, 1
TOPIC, GROUP, CLUSTER, TRANSACTIONAL_ID, DELEGATION_TOKEN, USER = 2, 3, 4, 5, 6, 7
MATCH, LITERAL, PREFIXED = 2, 3, 4
(ALL, READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, CLUSTER_ACTION, DESCRIBE_CONFIGS,
 ALTER_CONFIGS, IDEMPOTENT_WRITE, CREATE_TOKENS, DESCRIBE_TOKENS, TWO_PHASE_COMMIT) = range(2, 16)
DENY, ALLOW = 2, 3

RESOURCE_NAMES = {TOPIC: "TOPIC", GROUP: "GROUP", CLUSTER: "CLUSTER",
                  TRANSACTIONAL_ID: "TRANSACTIONAL_ID", DELEGATION_TOKEN: "DELEGATION_TOKEN",
                  USER: "USER"}
PATTERN_NAMES = {LITERAL: "LITERAL", PREFIXED: "PREFIXED"}
OPERATION_NAMES = {ALL: "ALL", READ: "READ", WRITE: "WRITE", CREATE: "CREATE", DELETE: "DELETE",
                   ALTER: "ALTER", DESCRIBE: "DESCRIBE", CLUSTER_ACTION: "CLUSTER_ACTION",
                   DESCRIBE_CONFIGS: "DESCRIBE_CONFIGS", ALTER_CONFIGS: "ALTER_CONFIGS",
                   IDEMPOTENT_WRITE: "IDEMPOTENT_WRITE", CREATE_TOKENS: "CREATE_TOKENS",
                   DESCRIBE_TOKENS: "DESCRIBE_TOKENS", TWO_PHASE_COMMIT: "TWO_PHASE_COMMIT"}
PERMISSION_NAMES = {DENY: "DENY", ALLOW: "ALLOW"}

WILDCARD = "*"
WILDCARD_PRINCIPAL = "User:*"
CLUSTER_NAME = "kafka-cluster"
ANONYMOUS = "User:ANONYMOUS"

_IMPLIES_DESCRIBE = frozenset({DESCRIBE, READ, WRITE, DELETE, ALTER})
_IMPLIES_DESCRIBE_CONFIGS = frozenset({DESCRIBE_CONFIGS, ALTER_CONFIGS})


@dataclass(frozen=True, slots=True)
class Acl:
    resource_type: int
    resource_name: str
    pattern_type: int
    principal: str
    host: str
    operation: int
    permission: int

    def matches_resource(self, resource_type: int, name: str) -> bool:
        if self.resource_type != resource_type:
            return False
        if self.pattern_type == LITERAL:
            return self.resource_name in (name, WILDCARD)
        return self.pattern_type == PREFIXED and name.startswith(self.resource_name)

    def verdict(self, principals: frozenset[str], host: str, operation: int) -> int | None:
        """ALLOW or DENY when this ACL (whose resource matches) applies, else None."""
        if self.principal not in principals or self.host not in (WILDCARD, host):
            return None
        if self.operation != ALL:
            if self.permission == ALLOW:
                if operation == DESCRIBE:
                    if self.operation not in _IMPLIES_DESCRIBE:
                        return None
                elif operation == DESCRIBE_CONFIGS:
                    if self.operation not in _IMPLIES_DESCRIBE_CONFIGS:
                        return None
                elif operation != self.operation:
                    return None
            elif operation != self.operation:
                return None
        return self.permission


def validate_new_acl(acl: Acl) -> None:
    """Kafka's AclControlManager.validateNewAcl: InvalidRequest for what cannot be stored."""
    if acl.resource_type not in RESOURCE_NAMES:
        raise InvalidRequest(f"Invalid resourceType {_name(RESOURCE_NAMES, acl.resource_type)}")
    if acl.pattern_type not in PATTERN_NAMES:
        raise InvalidRequest(f"Invalid patternType {_pattern_name(acl.pattern_type)}")
    if acl.operation not in OPERATION_NAMES:
        raise InvalidRequest(f"Invalid operation {_name(OPERATION_NAMES, acl.operation)}")
    if acl.permission not in PERMISSION_NAMES:
        raise InvalidRequest(f"Invalid permissionType {_name(PERMISSION_NAMES, acl.permission)}")
    if not acl.resource_name:
        raise InvalidRequest("Resource name should not be empty")
    if ":" not in acl.principal:
        raise InvalidRequest(f"Could not parse principal from `{acl.principal}` (no colon is "
                             "present separating the principal type from the principal name)")


def _name(names: Mapping[int, str], code: int) -> str:
    return names.get(code, "ANY" if code == ANY else "UNKNOWN")


def _pattern_name(code: int) -> str:
    return {ANY: "ANY", MATCH: "MATCH"}.get(code, PATTERN_NAMES.get(code, "UNKNOWN"))


@dataclass(frozen=True, slots=True)
class AclFilter:
    """An AclBindingFilter: None for the name, principal or host matches any."""

    resource_type: int = ANY
    resource_name: str | None = None
    pattern_type: int = ANY
    principal: str | None = None
    host: str | None = None
    operation: int = ANY
    permission: int = ANY

    def matches(self, acl: Acl) -> bool:
        if self.resource_type not in (ANY, acl.resource_type):
            return False
        if not self._matches_pattern(acl):
            return False
        return (self.principal in (None, acl.principal) and self.host in (None, acl.host)
                and self.operation in (ANY, acl.operation)
                and self.permission in (ANY, acl.permission))

    def _matches_pattern(self, acl: Acl) -> bool:
        if self.pattern_type == MATCH:
            if self.resource_name is None:
                return True
            if acl.pattern_type == LITERAL:
                return acl.resource_name in (self.resource_name, WILDCARD)
            return self.resource_name.startswith(acl.resource_name)
        if self.pattern_type not in (ANY, acl.pattern_type):
            return False
        return self.resource_name in (None, acl.resource_name)


class Authorizer:
    """StandardAuthorizer over the ACLs of a metadata image."""

    def __init__(self, acls: Mapping[uuid.UUID, Acl], *, super_users: Iterable[str] = (),
                 allow_if_no_acl: bool = False) -> None:
        self.acls = acls
        self.super_users = frozenset(super_users)
        self.allow_if_no_acl = allow_if_no_acl
        by_type: dict[int, list[Acl]] = {}
        for acl in acls.values():
            by_type.setdefault(acl.resource_type, []).append(acl)
        self._by_type = by_type

    def authorize(self, principal: str, host: str, operation: int, resource_type: int,
                  name: str) -> bool:
        if principal in self.super_users:
            return True
        principals = frozenset((principal, WILDCARD_PRINCIPAL))
        found_any = allowed = False
        for acl in self._by_type.get(resource_type, ()):
            if not acl.matches_resource(resource_type, name):
                continue
            found_any = True
            verdict = acl.verdict(principals, host, operation)
            if verdict == DENY:
                return False
            allowed = allowed or verdict == ALLOW
        return allowed or (not found_any and self.allow_if_no_acl)

    def authorized_operations(self, principal: str, host: str, resource_type: int, name: str,
                              operations: Iterable[int]) -> int:
        """The bitfield of `operations` allowed on the resource (1 << operation code), as
        Metadata, DescribeCluster and DescribeGroups answer it."""
        bits = 0
        for operation in operations:
            if self.authorize(principal, host, operation, resource_type, name):
                bits |= 1 << operation
        return bits

    def matching(self, acl_filter: AclFilter) -> list[tuple[uuid.UUID, Acl]]:
        return [(acl_id, acl) for acl_id, acl in self.acls.items() if acl_filter.matches(acl)]
