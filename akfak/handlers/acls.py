"""DescribeAcls (key 29), CreateAcls (key 30), DeleteAcls (key 31), v1-v3.

Behavior (as Kafka 4's AclApis, what `kafka-acls --list / --add / --remove` get):
- Without an authorizer (`authorizer.class.name` unset): DescribeAcls answers
  SECURITY_DISABLED "No Authorizer is configured on the broker" with no resources;
  CreateAcls answers each creation, DeleteAcls each filter, SECURITY_DISABLED "No
  Authorizer is configured." (an empty request: an empty answer).
- With the StandardAuthorizer: DescribeAcls needs DESCRIBE on the cluster, CreateAcls and
  DeleteAcls ALTER (else CLUSTER_AUTHORIZATION_FAILED for everything asked). DescribeAcls
  lists the ACLs its filter matches, grouped by resource pattern; CreateAcls validates each
  ACL as Kafka's controller (INVALID_REQUEST with its message) and writes the new ones as
  AccessControlEntryRecords; DeleteAcls removes every ACL each filter matches
  (RemoveAccessControlEntryRecords) and lists them. The answer waits for the fsync.
- A request naming the UNKNOWN (0) resource type, pattern type, operation or permission
  type in any filter or creation cannot be parsed, as Kafka's request classes refuse it:
  the connection is closed.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode
from kio.static.primitive import i8

from akfak.handlers.base import NO_THROTTLE, Handler
from akfak.protocol import MalformedRequest, RequestContext
from akfak.security.acls import ALTER, DESCRIBE, Acl, AclFilter
from akfak.security.checks import access

UNKNOWN = 0
DESCRIBE_DISABLED = "No Authorizer is configured on the broker"
CHANGE_DISABLED = "No Authorizer is configured."


def _check_known(what: str, *codes: int) -> None:
    """Kafka's normalizeAndValidate: no UNKNOWN element in a filter or creation."""
    if UNKNOWN in codes:
        raise MalformedRequest(f"{what} contains UNKNOWN elements")


class _AclHandler(Handler):
    min_version = 1
    max_version = 3

    def _denied(self, context: RequestContext, operation: int) -> bool:
        return not access(context).cluster(operation)


def _filter(f: Any) -> AclFilter:
    return AclFilter(int(f.resource_type_filter), f.resource_name_filter, int(f.pattern_type_filter),
                     f.principal_filter, f.host_filter, int(f.operation), int(f.permission_type))


CLUSTER_DENIED = "Cluster authorization failed."


class DescribeAclsHandler(_AclHandler):
    api_key = 29

    def decode(self, version: int, body: bytes, offset: int) -> Any:
        request = super().decode(version, body, offset)
        _check_known("DescribeAclsRequest", request.pattern_type_filter,
                     request.resource_type_filter, request.permission_type, request.operation)
        return request

    def handle(self, request: Any, context: RequestContext) -> Any:
        response = self.response_type(context.api_version)
        authorizer = self.broker.authorizer
        if authorizer is None:
            return response(throttle_time=NO_THROTTLE, error_code=ErrorCode.security_disabled,
                            error_message=DESCRIBE_DISABLED, resources=())
        if self._denied(context, DESCRIBE):
            return response(throttle_time=NO_THROTTLE,
                            error_code=ErrorCode.cluster_authorization_failed,
                            error_message=CLUSTER_DENIED, resources=())
        module = self.response_module(context.api_version)
        by_pattern: dict[tuple[int, str, int], list[Acl]] = {}
        for _, acl in authorizer.matching(_filter(request)):
            by_pattern.setdefault((acl.resource_type, acl.resource_name, acl.pattern_type),
                                  []).append(acl)
        return response(
            throttle_time=NO_THROTTLE, error_code=ErrorCode.none, error_message=None,
            resources=tuple(
                module.DescribeAclsResource(
                    resource_type=i8(rtype), resource_name=name, pattern_type=i8(ptype),
                    acls=tuple(module.AclDescription(principal=a.principal, host=a.host,
                                                     operation=i8(a.operation),
                                                     permission_type=i8(a.permission))
                               for a in acls))
                for (rtype, name, ptype), acls in by_pattern.items()))


class CreateAclsHandler(_AclHandler):
    api_key = 30

    def decode(self, version: int, body: bytes, offset: int) -> Any:
        request = super().decode(version, body, offset)
        for c in request.creations:
            _check_known("CreatableAcls", c.resource_pattern_type, c.resource_type,
                         c.permission_type, c.operation)
        return request

    def handle(self, request: Any, context: RequestContext) -> Any:
        module = self.response_module(context.api_version)
        response = self.response_type(context.api_version)

        def answer(errors: list[tuple[ErrorCode, str | None]]) -> Any:
            return response(throttle_time=NO_THROTTLE, results=tuple(
                module.AclCreationResult(error_code=code, error_message=message)
                for code, message in errors))

        if self.broker.authorizer is None:
            return answer([(ErrorCode.security_disabled, CHANGE_DISABLED)] * len(request.creations))
        if self._denied(context, ALTER):
            return answer([(ErrorCode.cluster_authorization_failed, CLUSTER_DENIED)]
                          * len(request.creations))
        results = self.broker.controller.create_acls([
            Acl(int(c.resource_type), c.resource_name, int(c.resource_pattern_type), c.principal,
                c.host, int(c.operation), int(c.permission_type)) for c in request.creations])
        errors = [(ErrorCode.none, None) if e is None else (ErrorCode(e.error_code), str(e))
                  for e in results]
        return self.broker.controller.wait_durable().addCallback(lambda _: answer(errors))


class DeleteAclsHandler(_AclHandler):
    api_key = 31

    def decode(self, version: int, body: bytes, offset: int) -> Any:
        request = super().decode(version, body, offset)
        for f in request.filters:
            _check_known("DeleteAclsRequest filters", f.pattern_type_filter,
                         f.resource_type_filter, f.operation, f.permission_type)
        return request

    def handle(self, request: Any, context: RequestContext) -> Any:
        module = self.response_module(context.api_version)
        response = self.response_type(context.api_version)

        def refused(code: ErrorCode, message: str) -> Any:
            return response(throttle_time=NO_THROTTLE, filter_results=tuple(
                module.DeleteAclsFilterResult(error_code=code, error_message=message,
                                              matching_acls=())
                for _ in request.filters))

        if self.broker.authorizer is None:
            return refused(ErrorCode.security_disabled, CHANGE_DISABLED)
        if self._denied(context, ALTER):
            return refused(ErrorCode.cluster_authorization_failed, CLUSTER_DENIED)
        removed = self.broker.controller.delete_acls([_filter(f) for f in request.filters])
        answer = response(throttle_time=NO_THROTTLE, filter_results=tuple(
            module.DeleteAclsFilterResult(error_code=ErrorCode.none, error_message=None,
                                          matching_acls=tuple(
                module.DeleteAclsMatchingAcl(
                    error_code=ErrorCode.none, error_message=None,
                    resource_type=i8(a.resource_type), resource_name=a.resource_name,
                    pattern_type=i8(a.pattern_type), principal=a.principal, host=a.host,
                    operation=i8(a.operation), permission_type=i8(a.permission))
                for a in acls))
            for acls in removed))
        return self.broker.controller.wait_durable().addCallback(lambda _: answer)


HANDLERS = (DescribeAclsHandler, CreateAclsHandler, DeleteAclsHandler)
