"""Broker settings of share groups: the static value, else Kafka's default (the config catalog,
or below for Kafka's internal configs, which the catalog does not list)."""

from __future__ import annotations

from akfak.broker_configs import static_broker_value
from akfak.config import BrokerConfig

_INTERNAL_DEFAULTS = {"group.share.enable": "false",
                      "share.coordinator.state.topic.prune.interval.ms": "300000"}


def setting(config: BrokerConfig, name: str) -> str:
    value = static_broker_value(config, name)
    return str(value if value is not None else _INTERNAL_DEFAULTS[name])


def int_setting(config: BrokerConfig, name: str) -> int:
    return int(setting(config, name))
