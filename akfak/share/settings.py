"""Broker settings of share groups: the static value, else Kafka's default (the config catalog,
or below for Kafka's internal configs, which the catalog does not list); and group configs
(config resource GROUP), which override them for one group."""

from __future__ import annotations

from typing import Any

from akfak.broker_configs import static_broker_value
from akfak.config import BrokerConfig

_INTERNAL_DEFAULTS = {"group.share.enable": "false",
                      "share.coordinator.state.topic.prune.interval.ms": "300000"}


def setting(config: BrokerConfig, name: str) -> str:
    value = static_broker_value(config, name)
    return str(value if value is not None else _INTERNAL_DEFAULTS[name])


def int_setting(config: BrokerConfig, name: str) -> int:
    return int(setting(config, name))


def group_setting(broker: Any, group_id: str, name: str, broker_name: str | None) -> str:
    """The group's config `name`, else the broker's `broker_name`, else the config's default."""
    value = broker.image.group_configs.get(group_id, {}).get(name)
    if value is not None:
        return str(value)
    if broker_name is not None:
        return setting(broker.config, broker_name)
    from akfak.resource_configs import GROUP_CONFIGS

    return GROUP_CONFIGS[name].default
