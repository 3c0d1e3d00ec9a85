"""Authorization checks as handlers ask them, one `Access` per request.

- `access(context)` is the request's Access: with no authorizer configured it is
  `EVERYTHING` (one attribute test, every check True, every bitfield full), else an
  Access over the broker's StandardAuthorizer for the request's principal and host
  that caches each (operation, resource type, name) answer for the rest of the
  request (a Produce of many batches to one topic asks the authorizer once).
- A denial Kafka would log (an explicit check, not a filter) is logged at DEBUG as
  Kafka's authorizer logger words it: principal, operation, host, resource, request.
- `operations` is the authorized-operations bitfield Metadata, DescribeCluster,
  DescribeGroups and DescribeTopicPartitions answer: 1 << code for each operation
  Kafka supports on that resource type (AclEntry.supportedOperations) that is allowed.
- `any_allowed` is Kafka's Authorizer.authorizeByResourceType (InitProducerId for an
  idempotent producer without IDEMPOTENT_WRITE): some ALLOW for the operation on a
  resource of the type that no DENY of the principal dominates.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from akfak.security.acls import (
    ALL,
    ALLOW,
    ALTER,
    ALTER_CONFIGS,
    CLUSTER,
    CLUSTER_ACTION,
    CLUSTER_NAME,
    CREATE,
    CREATE_TOKENS,
    DELEGATION_TOKEN,
    DELETE,
    DENY,
    DESCRIBE,
    DESCRIBE_CONFIGS,
    DESCRIBE_TOKENS,
    GROUP,
    IDEMPOTENT_WRITE,
    LITERAL,
    OPERATION_NAMES,
    PREFIXED,
    READ,
    TOPIC,
    TRANSACTIONAL_ID,
    TWO_PHASE_COMMIT,
    USER,
    WILDCARD,
    WILDCARD_PRINCIPAL,
    WRITE,
    Authorizer,
)

if TYPE_CHECKING:
    from akfak.protocol import RequestContext

log = Logger(namespace="kafka.authorizer.logger")

#: AclEntry.supportedOperations: what authorized-operations bitfields range over.
SUPPORTED_OPERATIONS: dict[int, tuple[int, ...]] = {
    TOPIC: (READ, WRITE, CREATE, DESCRIBE, DELETE, ALTER, DESCRIBE_CONFIGS, ALTER_CONFIGS),
    GROUP: (READ, DESCRIBE, DELETE, DESCRIBE_CONFIGS, ALTER_CONFIGS),
    CLUSTER: (CREATE, CLUSTER_ACTION, DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE, ALTER,
              DESCRIBE),
    TRANSACTIONAL_ID: (DESCRIBE, WRITE, TWO_PHASE_COMMIT),
    DELEGATION_TOKEN: (DESCRIBE,),
    USER: (CREATE_TOKENS, DESCRIBE_TOKENS),
}
ALL_OPERATIONS = {rtype: sum(1 << op for op in ops) for rtype, ops in SUPPORTED_OPERATIONS.items()}
#: Kafka's messages for the authorization errors (Errors.message()), by code
DENIED_MESSAGES = {29: "Topic authorization failed.", 30: "Group authorization failed.",
                   31: "Cluster authorization failed.",
                   53: "Transactional Id authorization failed."}
#: ConfigResource types (DescribeConfigs, AlterConfigs) -> the ACL resource type checked
#: and the error refused ones get (ConfigHelper, ControllerApis.authorizeAlterResource);
#: BROKER, BROKER_LOGGER and CLIENT_METRICS are checked on the cluster.
_CONFIG_RESOURCES = {2: (TOPIC, 29), 32: (GROUP, 30), 4: (CLUSTER, 31), 8: (CLUSTER, 31),
                     16: (CLUSTER, 31)}
_RESOURCE_LABELS = {TOPIC: "Topic", GROUP: "Group", CLUSTER: "Cluster",
                    TRANSACTIONAL_ID: "TransactionalId", DELEGATION_TOKEN: "DelegationToken",
                    USER: "User"}


class Everything:
    """The Access of a broker without an authorizer: everything is allowed."""

    __slots__ = ()
    enabled = False

    def allows(self, operation: int, resource_type: int, name: str, *, log_denied: bool = True
               ) -> bool:
        return True

    def cluster(self, operation: int, *, log_denied: bool = True) -> bool:
        return True

    def allowed(self, operation: int, resource_type: int, names: Iterable[str], *,
                log_denied: bool = True) -> set[str]:
        return set(names)

    def operations(self, resource_type: int, name: str) -> int:
        return ALL_OPERATIONS[resource_type]

    def any_allowed(self, operation: int, resource_type: int) -> bool:
        return True


EVERYTHING = Everything()


class Nothing(Everything):
    """Denies everything: a follower's Fetch without CLUSTER_ACTION."""

    __slots__ = ()
    enabled = True

    def allows(self, operation: int, resource_type: int, name: str, *, log_denied: bool = True
               ) -> bool:
        return False


NOTHING = Nothing()


class Access(Everything):
    """The authorizer's answers for one request's principal and host, cached."""

    __slots__ = ("_authorizer", "_cache", "_request", "host", "principal")
    enabled = True

    def __init__(self, authorizer: Authorizer, principal: str, host: str, request: str) -> None:
        self._authorizer = authorizer
        self.principal = principal
        self.host = host
        self._request = request
        self._cache: dict[tuple[int, int, str], bool] = {}

    def allows(self, operation: int, resource_type: int, name: str, *, log_denied: bool = True
               ) -> bool:
        key = (operation, resource_type, name)
        verdict = self._cache.get(key)
        if verdict is None:
            verdict = self._cache[key] = self._authorizer.authorize(
                self.principal, self.host, operation, resource_type, name)
            if not verdict and log_denied:
                log.debug("Principal = {principal} is Denied operation = {operation} from host = "
                          "{host} on resource = {resource}:LITERAL:{name} for request = {request}",
                          principal=self.principal, operation=OPERATION_NAMES[operation],
                          host=self.host, resource=_RESOURCE_LABELS[resource_type], name=name,
                          request=self._request)
        return verdict

    def cluster(self, operation: int, *, log_denied: bool = True) -> bool:
        return self.allows(operation, CLUSTER, CLUSTER_NAME, log_denied=log_denied)

    def allowed(self, operation: int, resource_type: int, names: Iterable[str], *,
                log_denied: bool = True) -> set[str]:
        return {name for name in set(names)
                if self.allows(operation, resource_type, name, log_denied=log_denied)}

    def operations(self, resource_type: int, name: str) -> int:
        bits = 0
        for operation in SUPPORTED_OPERATIONS[resource_type]:
            if self.allows(operation, resource_type, name, log_denied=False):
                bits |= 1 << operation
        return bits

    def any_allowed(self, operation: int, resource_type: int) -> bool:
        # Super users (and allow.everyone.if.no.acl.found) as Kafka finds them: by a made-up name.
        if self.allows(operation, resource_type, "hardcode", log_denied=False):
            return True
        principals = (self.principal, WILDCARD_PRINCIPAL)
        denied: dict[int, set[str]] = {LITERAL: set(), PREFIXED: set()}
        allowed: dict[int, set[str]] = {LITERAL: set(), PREFIXED: set()}
        for acl in self._authorizer.acls.values():
            if (acl.resource_type != resource_type or acl.host not in (WILDCARD, self.host)
                    or acl.principal not in principals or acl.operation not in (operation, ALL)):
                continue
            if acl.permission == DENY:
                if acl.pattern_type == LITERAL and acl.resource_name == WILDCARD:
                    return False
                denied[acl.pattern_type].add(acl.resource_name)
            elif acl.permission == ALLOW:
                if acl.pattern_type == LITERAL and acl.resource_name == WILDCARD:
                    return True
                allowed[acl.pattern_type].add(acl.resource_name)
        for pattern_type, names in allowed.items():
            for name in names:
                if pattern_type == LITERAL and name in denied[LITERAL]:
                    continue
                if not any(name[:i] in denied[PREFIXED] for i in range(1, len(name) + 1)):
                    return True
        return False


def config_denied(acl: Everything, operation: int, config_type: int, name: str) -> int | None:
    """The error code for a config resource the principal may not DESCRIBE_CONFIGS /
    ALTER_CONFIGS, else None (also for types Kafka refuses before asking)."""
    found = _CONFIG_RESOURCES.get(config_type)
    if found is None:
        return None
    resource_type, error = found
    allowed = acl.allows(operation, resource_type,
                         CLUSTER_NAME if resource_type == CLUSTER else name)
    return None if allowed else error


def access(context: RequestContext) -> Everything:
    """The request's Access (made once, kept on the context)."""
    found: Any = context.access
    if found is None:
        authorizer = context.broker.authorizer
        if authorizer is None:
            found = EVERYTHING
        else:
            handler = context.broker.registry.get(context.header.api_key)
            found = Access(authorizer, context.principal, context.client_host,
                           type(handler).__name__.removesuffix("Handler"))
        context.access = found
    return found

