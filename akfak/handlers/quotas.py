"""DescribeClientQuotas (key 48) and AlterClientQuotas (key 49), v0-v1.

Behaviour (Kafka 4's KafkaApis / ControllerApis, what `kafka-configs --entity-type users|clients|ips`
and the admin clients' describe/alter_client_quotas get):
- Describe needs DESCRIBE_CONFIGS on the cluster, else CLUSTER_AUTHORIZATION_FAILED at the top;
  Alter needs ALTER_CONFIGS on the cluster, else every entry gets it.
- Validation, filters and messages as Kafka's ClientQuotaControlManager and ClientQuotasImage
  (akfak.quota_control). Valid changes are ClientQuotaRecords in `__cluster_metadata`, answered
  once fsynced, and enforced from the next request (akfak.quota_manager); `validate_only`
  answers the same without writing.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode
from kio.static.primitive import f64

from akfak.handlers.base import NO_THROTTLE, Handler
from akfak.protocol import RequestContext
from akfak.quota_control import InvalidFilter, describe
from akfak.security.acls import ALTER_CONFIGS, DESCRIBE_CONFIGS
from akfak.security.checks import DENIED_MESSAGES, access

CLUSTER_DENIED = DENIED_MESSAGES[31]


class DescribeClientQuotasHandler(Handler):
    api_key = 48
    min_version = 0
    max_version = 1

    def handle(self, request: Any, context: RequestContext) -> Any:
        module = self.response_module(context.api_version)
        response = self.response_type(context.api_version)
        if not access(context).cluster(DESCRIBE_CONFIGS):
            return response(throttle_time=NO_THROTTLE, error_code=ErrorCode.cluster_authorization_failed,
                            error_message=CLUSTER_DENIED, entries=None)
        try:
            found = describe(self.broker.image.client_quotas, request.components, request.strict)
        except InvalidFilter as e:
            return response(throttle_time=NO_THROTTLE, error_code=ErrorCode(e.code),
                            error_message=str(e), entries=None)
        entries = tuple(
            module.EntryData(
                entity=tuple(module.EntityData(entity_type=t, entity_name=n) for t, n in entity),
                values=tuple(module.ValueData(key=k, value=f64(v)) for k, v in sorted(values.items())))
            for entity, values in found)
        return response(throttle_time=NO_THROTTLE, error_code=ErrorCode.none, error_message=None,
                        entries=entries)


class AlterClientQuotasHandler(Handler):
    api_key = 49
    min_version = 0
    max_version = 1

    def handle(self, request: Any, context: RequestContext) -> Any:
        module = self.response_module(context.api_version)
        response = self.response_type(context.api_version)

        def answer(results: list[tuple[int, str | None]]) -> Any:
            return response(throttle_time=NO_THROTTLE, entries=tuple(
                module.EntryData(error_code=ErrorCode(code), error_message=message, entity=tuple(
                    module.EntityData(entity_type=e.entity_type, entity_name=e.entity_name)
                    for e in entry.entity))
                for entry, (code, message) in zip(request.entries, results, strict=True)))

        if not access(context).cluster(ALTER_CONFIGS):
            return answer([(ErrorCode.cluster_authorization_failed.value, CLUSTER_DENIED)]
                          * len(request.entries))
        controller = self.broker.controller
        results = controller.alter_client_quotas(request.entries, validate_only=request.validate_only)
        if request.validate_only:
            return answer(results)
        return controller.wait_durable().addCallback(lambda _: answer(results))


HANDLERS = (DescribeClientQuotasHandler, AlterClientQuotasHandler)
