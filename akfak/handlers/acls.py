"""DescribeAcls (key 29), CreateAcls (key 30), DeleteAcls (key 31), v1-v3.

Behavior (as Kafka 4's AclApis on a broker without an authorizer, what `kafka-acls --list /
--add / --remove` get):
- DescribeAcls answers SECURITY_DISABLED "No Authorizer is configured on the broker" with no
  resources; CreateAcls answers each creation, DeleteAcls each filter, SECURITY_DISABLED "No
  Authorizer is configured." (an empty request: an empty answer).
- A request naming the UNKNOWN (0) resource type, pattern type, operation or permission
  type in any filter or creation cannot be parsed, as Kafka's request classes refuse it:
  the connection is closed.
- akfak has no authorizer yet: the security work answers these from one, in this module.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from akfak.handlers.base import NO_THROTTLE, Handler
from akfak.protocol import MalformedRequest, RequestContext

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


class DescribeAclsHandler(_AclHandler):
    api_key = 29

    def decode(self, version: int, body: bytes, offset: int) -> Any:
        request = super().decode(version, body, offset)
        _check_known("DescribeAclsRequest", request.pattern_type_filter,
                     request.resource_type_filter, request.permission_type, request.operation)
        return request

    def handle(self, request: Any, context: RequestContext) -> Any:
        return self.response_type(context.api_version)(
            throttle_time=NO_THROTTLE, error_code=ErrorCode.security_disabled,
            error_message=DESCRIBE_DISABLED, resources=())


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
        return self.response_type(context.api_version)(
            throttle_time=NO_THROTTLE, results=tuple(
                module.AclCreationResult(error_code=ErrorCode.security_disabled,
                                         error_message=CHANGE_DISABLED)
                for _ in request.creations))


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
        return self.response_type(context.api_version)(
            throttle_time=NO_THROTTLE, filter_results=tuple(
                module.DeleteAclsFilterResult(error_code=ErrorCode.security_disabled,
                                              error_message=CHANGE_DISABLED, matching_acls=())
                for _ in request.filters))


HANDLERS = (DescribeAclsHandler, CreateAclsHandler, DeleteAclsHandler)
