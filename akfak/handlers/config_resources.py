"""ListConfigResources (key 74) v0-v1, formerly ListClientMetricsResources.

Behavior (as Kafka 4.1's KafkaApis.handleListConfigResources; `kafka-client-metrics --list`
sends v0 or v1 naming CLIENT_METRICS):
- v0 lists client-metrics subscriptions (CLIENT_METRICS resources); v1 the resources of the
  types named, or of every type when none is named: GROUP (groups with dynamic configs),
  CLIENT_METRICS (subscriptions), BROKER_LOGGER and BROKER (this node's id), TOPIC (every
  topic, internal ones included), in that order, names sorted.
- A group or subscription is listed while it has configs (Kafka lists a group whose configs
  were all deleted until the broker restarts).
- A type outside TOPIC 2, BROKER 4, BROKER_LOGGER 8, CLIENT_METRICS 16, GROUP 32 answers
  UNSUPPORTED_VERSION with nothing listed, as Kafka does.
- ACLs: DESCRIBE_CONFIGS on the cluster, else CLUSTER_AUTHORIZATION_FAILED, nothing listed.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode
from kio.static.primitive import i8

from akfak.handlers.base import NO_THROTTLE, Handler, make
from akfak.handlers.configs import BROKER, BROKER_LOGGER, CLIENT_METRICS, GROUP, TOPIC
from akfak.protocol import RequestContext
from akfak.security.acls import DESCRIBE_CONFIGS
from akfak.security.checks import access

#: The order Kafka lists the resource types in when asked for all of them.
ALL_TYPES = (GROUP, CLIENT_METRICS, BROKER_LOGGER, BROKER, TOPIC)


class ListConfigResourcesHandler(Handler):
    api_key = 74
    min_version = 0
    max_version = 1

    def handle(self, request: Any, context: RequestContext) -> Any:
        version = context.api_version
        module = self.response_module(version)
        if not access(context).cluster(DESCRIBE_CONFIGS):
            return self.response_type(version)(
                throttle_time=NO_THROTTLE, error_code=ErrorCode.cluster_authorization_failed,
                config_resources=())
        if version == 0:
            wanted: tuple[int, ...] = (CLIENT_METRICS,)
        else:
            asked = {int(t) for t in request.resource_types}
            if asked - set(ALL_TYPES):
                return self.response_type(version)(
                    throttle_time=NO_THROTTLE, error_code=ErrorCode.unsupported_version,
                    config_resources=())
            wanted = tuple(t for t in ALL_TYPES if t in asked) if asked else ALL_TYPES
        resources = [make(module.ConfigResource, resource_name=name, resource_type=i8(kind))
                     for kind in wanted for name in self._names(kind)]
        return self.response_type(version)(throttle_time=NO_THROTTLE, error_code=ErrorCode.none,
                                           config_resources=tuple(resources))

    def _names(self, kind: int) -> list[str]:
        if kind in (BROKER, BROKER_LOGGER):
            return [str(self.broker.node_id)]
        image = self.broker.image
        if kind == TOPIC:
            return sorted(image.topics_by_name)
        if kind == GROUP:
            return sorted(image.group_configs)
        return sorted(image.client_metrics)


HANDLERS = (ListConfigResourcesHandler,)
