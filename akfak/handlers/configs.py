"""DescribeConfigs (key 32) v1-v4, AlterConfigs (key 33) v0-v2, IncrementalAlterConfigs
(key 44) v0-v1.

Behavior (as Kafka 4's ConfigHelper, ConfigAdminManager and ConfigurationControlManager):
- Resources: topics (type 2) and brokers (type 4; name "" is the cluster-wide default,
  else this node's id).  Another broker id answers INVALID_REQUEST "Unexpected broker id
  ...", a name that is no number "Broker id must be an integer ..." (describe) / "Node id
  must be an integer ..." (alter).  BROKER_LOGGER (8) describes the one root logger, and
  alters it as akfak.broker_logger says.
  Groups (32) and client-metrics subscriptions (16) by name (any name: one without
  configs describes the defaults; "" answers INVALID_REQUEST), their configs and checks
  in akfak.resource_configs.  Other types answer INVALID_REQUEST.
- DescribeConfigs: a topic lists every topic config, a broker every broker config akfak
  knows (akfak.broker_configs) plus any key its server.properties sets; the cluster
  default resource lists only the dynamic defaults.  Each with its effective value,
  config_source (DYNAMIC_TOPIC_CONFIG 1, DYNAMIC_BROKER_CONFIG 2, DYNAMIC_DEFAULT_BROKER_CONFIG
  3, STATIC_BROKER_CONFIG 4, DEFAULT_CONFIG 5, CLIENT_METRICS_CONFIG 7, GROUP_CONFIG 8),
  read_only (broker configs Kafka cannot change at run time), is_sensitive (passwords and
  unknown keys, whose value is then null),
  synonyms when include_synonyms, config_type (v3+), documentation when asked (v3+).
  configuration_keys null or empty means all.  An unknown topic answers
  UNKNOWN_TOPIC_OR_PARTITION, an illegal name INVALID_TOPIC_EXCEPTION.
- AlterConfigs replaces a resource's whole set of dynamic configs (keys not given are
  deleted); IncrementalAlterConfigs applies SET, DELETE, APPEND and SUBTRACT (the last two
  on LIST configs only: INVALID_CONFIG otherwise, starting from the default when unset;
  as in Kafka, whose controller knows only topic and broker config types, never on group
  or client-metrics configs).
  A resource named twice answers INVALID_REQUEST for both, as do repeated keys and null
  values (but for DELETE).  Topic configs are checked by the controller (INVALID_CONFIG
  for an unknown key or bad value); broker configs here: read-only keys ("Cannot update
  these configs dynamically"), per-broker keys at the cluster level, values not of the
  config's type, all INVALID_REQUEST as Kafka's ConfigAdminManager answers.
- Changes are ConfigRecords in the metadata log (so they survive restarts) and are applied
  to the running partition logs at once; validate_only checks and writes nothing.  Dynamic
  broker configs act through the topic configs they default (log.retention.ms ...); the
  others are kept and reported but change nothing in akfak.
- ACLs: DESCRIBE_CONFIGS (describe) / ALTER_CONFIGS (alter) on the topic, the group, or the
  cluster for broker, logger and client-metrics resources; else TOPIC_, GROUP_ or
  CLUSTER_AUTHORIZATION_FAILED with Kafka's message.  Refused describes come after the
  others; an alter is checked where Kafka's controller checks it, after the broker's own
  preprocessing (repeated keys, null values, broker config validation).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kio.schema.errors import ErrorCode
from kio.static.primitive import i8

from akfak.broker_configs import (
    BrokerConfigView,
    ConfigValue,
    config_default,
    is_list_config,
    topic_config_entries,
    validate_dynamic_broker_change,
)
from akfak.broker_logger import check_logger_alteration
from akfak.errors import InvalidConfig, InvalidRequest, KafkaError, UnknownTopicOrPartition, error_for_code
from akfak.handlers.admin_common import after_durable, duplicates, run_or_error
from akfak.handlers.base import NO_THROTTLE, Handler
from akfak.log.config import LogConfig
from akfak.metadata_image import changed_configs, validate_topic_name
from akfak.protocol import RequestContext
from akfak.resource_configs import client_metrics_entries, group_config_entries
from akfak.security.acls import ALTER_CONFIGS, DESCRIBE_CONFIGS
from akfak.security.checks import DENIED_MESSAGES, Everything, access, config_denied

TOPIC, BROKER, BROKER_LOGGER, CLIENT_METRICS, GROUP = 2, 4, 8, 16, 32
SET, DELETE, APPEND, SUBTRACT = 0, 1, 2, 3
OP_NAMES = {SET: "SET", DELETE: "DELETE", APPEND: "APPEND", SUBTRACT: "SUBTRACT"}
SOURCE_BROKER_LOGGER = 6


class DescribeConfigsHandler(Handler):
    api_key = 32
    min_version = 1
    max_version = 4

    def handle(self, request: Any, context: RequestContext) -> Any:
        version = context.api_version
        module = self.response_module(version)
        synonyms = bool(request.include_synonyms)
        documentation = version >= 3 and bool(request.include_documentation)
        results = []
        denied = []  # answered after the others, as Kafka's ConfigHelper does
        acl = access(context)
        for resource in request.resources:
            resource_type = int(resource.resource_type)
            refused = config_denied(acl, DESCRIBE_CONFIGS, resource_type, resource.resource_name)
            if refused is not None:
                denied.append(module.DescribeConfigsResult(
                    error_code=ErrorCode(refused), error_message=DENIED_MESSAGES[refused],
                    resource_type=i8(resource_type), resource_name=resource.resource_name,
                    configs=()))
                continue
            keys = resource.configuration_keys
            wanted = set(keys) if keys else None
            try:
                entries = self._describe(resource_type, resource.resource_name, wanted,
                                         documentation)
            except KafkaError as e:
                error, message, entries = ErrorCode(e.error_code), str(e), []
                if isinstance(e, UnknownTopicOrPartition):
                    message = ""  # Kafka answers an unknown topic without a message
            else:
                error, message = ErrorCode.none, ""  # the field's default, as Kafka sends it
            results.append(module.DescribeConfigsResult(
                error_code=error, error_message=message, resource_type=i8(resource_type),
                resource_name=resource.resource_name,
                configs=tuple(self._entry(module, version, e, synonyms) for e in entries)))
        return self.response_type(version)(throttle_time=NO_THROTTLE,
                                           results=(*results, *denied))

    def _describe(self, resource_type: int, name: str, wanted: set[str] | None,
                  documentation: bool) -> list[ConfigValue]:
        broker = self.broker
        image = broker.image
        per_broker = image.broker_configs.get(str(broker.node_id), {})
        cluster_default = image.broker_configs.get("", {})
        if resource_type == TOPIC:
            validate_topic_name(name)
            if image.topic(name) is None:
                raise UnknownTopicOrPartition()
            return topic_config_entries(broker.config, image.configs_of_topic(name), per_broker,
                                        cluster_default, keys=wanted, documentation=documentation)
        if resource_type == BROKER:
            view = BrokerConfigView(broker.config, per_broker, cluster_default)
            if not name:
                names = sorted(cluster_default)
                per_broker_resource = False
            else:
                check_describe_broker_name(name, broker.node_id)
                names = view.names()
                per_broker_resource = True
            return [view.entry(n, per_broker_resource=per_broker_resource,
                               documentation=documentation)
                    for n in names if wanted is None or n in wanted]
        if resource_type == BROKER_LOGGER:
            if not name:
                raise InvalidRequest("Broker id must not be empty")
            node = _broker_id(name, "Broker id must be an integer, but it is: ")
            if node != broker.node_id:
                raise InvalidRequest(f"Unexpected broker id, expected {broker.node_id} but "
                                     f"received {name}")
            # twisted.logger has no per-logger levels: one root logger at INFO.
            if wanted is not None and "root" not in wanted:
                return []
            return [ConfigValue("root", "INFO", SOURCE_BROKER_LOGGER, False, False, 0, (), None)]
        if resource_type == GROUP:
            if not name:
                raise InvalidRequest("Group name must not be empty")
            entries = group_config_entries(broker.config, image.group_configs.get(name, {}),
                                           documentation)
        elif resource_type == CLIENT_METRICS:
            if not name:
                raise InvalidRequest("Client metrics subscription name must not be empty")
            entries = client_metrics_entries(image.client_metrics.get(name, {}), documentation)
        else:
            raise InvalidRequest(f"Unsupported resource type: {resource_type}")
        return [e for e in entries if wanted is None or e.name in wanted]

    @staticmethod
    def _entry(module: Any, version: int, entry: ConfigValue, with_synonyms: bool) -> Any:
        fields: dict[str, Any] = {
            "name": entry.name, "value": entry.value, "read_only": entry.read_only,
            "config_source": i8(entry.source), "is_sensitive": entry.sensitive,
            "synonyms": tuple(module.DescribeConfigsSynonym(name=n, value=v, source=i8(s))
                              for n, v, s in entry.synonyms) if with_synonyms else (),
        }
        if version >= 3:
            fields.update(config_type=i8(entry.config_type), documentation=entry.documentation)
        return module.DescribeConfigsResourceResult(**fields)


def _check_alter(acl: Everything, resource_type: int, name: str) -> None:
    refused = config_denied(acl, ALTER_CONFIGS, resource_type, name)
    if refused is not None:
        raise error_for_code(refused)



def _broker_id(name: str, message: str) -> int:
    try:
        return int(name)
    except ValueError:
        raise InvalidRequest(message + name) from None


def check_describe_broker_name(name: str, node_id: int) -> None:
    if _broker_id(name, "Broker id must be an integer, but it is: ") != node_id:
        raise InvalidRequest(f"Unexpected broker id, expected {node_id} or empty string, but "
                             f"received {name}")


class _AlterBase(Handler):
    """What AlterConfigs and IncrementalAlterConfigs share: preprocessing per resource as
    Kafka's ConfigAdminManager, then the controller."""

    incremental = False

    def handle(self, request: Any, context: RequestContext) -> Any:
        version = context.api_version
        module = self.response_module(version)
        validate_only = bool(request.validate_only)
        repeated = duplicates((int(r.resource_type), r.resource_name) for r in request.resources)
        controller = self.broker.controller
        before = controller.image.offset
        results = []
        acl = access(context)
        for resource in request.resources:
            resource_type = int(resource.resource_type)
            if (resource_type, resource.resource_name) in repeated:
                error, message = ErrorCode.invalid_request, "Each resource must appear at most once."
            else:
                _, error, message = run_or_error(
                    lambda resource=resource: self._alter(resource, validate_only, acl),
                    f"altering configs of {resource.resource_name!r}")
                message = DENIED_MESSAGES.get(error, message)  # as Kafka's ApiError(error)
            results.append(module.AlterConfigsResourceResponse(
                error_code=error, error_message=message, resource_type=i8(resource_type),
                resource_name=resource.resource_name))
        response = self.response_type(version)(throttle_time=NO_THROTTLE, responses=tuple(results))
        return after_durable(self.broker, response, controller.image.offset != before)

    def _alter(self, resource: Any, validate_only: bool, acl: Everything) -> None:
        resource_type = int(resource.resource_type)
        name = resource.resource_name
        configs = list(resource.configs)
        if duplicates(c.name for c in configs):
            raise InvalidRequest("Error due to duplicate config keys")
        null_updates = [c.name for c in configs if c.value is None
                        and not (self.incremental and int(c.config_operation) == DELETE)]
        if null_updates:
            raise InvalidRequest("Null value not supported for : " + ", ".join(null_updates))
        broker = self.broker
        image = broker.image
        if resource_type != BROKER and (self.incremental or resource_type != BROKER_LOGGER):
            _check_alter(acl, resource_type, name)  # a broker's change is validated first
        if resource_type == TOPIC:
            if not name:
                raise InvalidRequest("Default topic resources are not allowed.")
            validate_topic_name(name)
            current: Mapping[str, str] = image.configs_of_topic(name)
        elif resource_type == BROKER:
            if name:
                node = _broker_id(name, "Node id must be an integer, but it is: ")
                if node != broker.node_id:
                    raise InvalidRequest(f"Unexpected broker id, expected {broker.node_id}, but "
                                         f"received {name}")
            current = image.broker_configs.get(name, {})
        elif resource_type == GROUP:
            current = image.group_configs.get(name, {})
        elif resource_type == CLIENT_METRICS:
            current = image.client_metrics.get(name, {})
        elif resource_type == BROKER_LOGGER and self.incremental:
            check_logger_alteration(name, configs, broker.node_id)
            return
        else:
            raise InvalidRequest(f"Unknown resource type {resource_type}")
        changes = self.changes(resource_type, configs, current)
        if resource_type == BROKER:
            self._check_broker(name, current, changes)
            _check_alter(acl, resource_type, name)
        broker.controller.alter_configs(resource_type, name, changes, validate_only=validate_only)

    def changes(self, resource_type: int, configs: list[Any], current: Mapping[str, str]
                ) -> dict[str, str | None]:
        raise NotImplementedError

    def _check_broker(self, name: str, current: Mapping[str, str],
                      changes: Mapping[str, str | None]) -> None:
        resulting = changed_configs(current, changes)
        validate_dynamic_broker_change(resulting, per_broker=bool(name))
        # The topic configs these broker keys default must still resolve.
        image = self.broker.image
        levels = dict(image.broker_configs)
        levels[name] = resulting
        dynamic = {**levels.get("", {}), **levels.get(str(self.broker.node_id), {})}
        try:
            LogConfig.from_broker(self.broker.config, {}, dynamic)
        except InvalidConfig as e:
            raise InvalidRequest(str(e)) from None


class AlterConfigsHandler(_AlterBase):
    api_key = 33
    min_version = 0
    max_version = 2

    def changes(self, resource_type: int, configs: list[Any], current: Mapping[str, str]
                ) -> dict[str, str | None]:
        # The legacy API sets the whole dynamic config of the resource.
        changes: dict[str, str | None] = {key: None for key in current}
        changes.update({c.name: c.value for c in configs})
        return changes


class IncrementalAlterConfigsHandler(_AlterBase):
    api_key = 44
    min_version = 0
    max_version = 1
    incremental = True

    def changes(self, resource_type: int, configs: list[Any], current: Mapping[str, str]
                ) -> dict[str, str | None]:
        changes: dict[str, str | None] = {}
        for config in configs:
            op = int(config.config_operation)
            if op not in OP_NAMES:
                raise InvalidRequest(f"Unknown operations type {op}")
            key, value = config.name, config.value
            if op == SET:
                changes[key] = value
            elif op == DELETE:
                changes[key] = None
            else:
                if not is_list_config(resource_type, key):
                    raise InvalidConfig(f"Can't {OP_NAMES[op]} to key {key} because its type is "
                                        f"not LIST.")
                old = current.get(key)
                if old is None:
                    old = config_default(resource_type, key)
                items = [item for item in (old or "").split(",") if item]
                for item in (value or "").split(","):
                    if op == APPEND and item not in items:
                        items.append(item)
                    elif op == SUBTRACT and item in items:
                        items.remove(item)
                changes[key] = ",".join(items)
        return changes


HANDLERS = (DescribeConfigsHandler, AlterConfigsHandler, IncrementalAlterConfigsHandler)
