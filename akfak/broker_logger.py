"""The BROKER_LOGGER config resource (type 8) of IncrementalAlterConfigs.

As Kafka 4's RuntimeLoggerManager: the resource name must be this node's id ("Node id must be
an integer, but it is: X", "Unexpected node id. Expected N, but received N", both
INVALID_REQUEST, the second naming this node twice as Kafka's does); then each operation:
SET of a logger that does not exist, or DELETE of one, answers INVALID_CONFIG "Logger X does
not exist!"; SET to a level outside DEBUG, ERROR, FATAL, INFO, TRACE, WARN answers
INVALID_CONFIG; DELETE of the root logger, APPEND and SUBTRACT answer INVALID_REQUEST.

akfak has one logger, "root" (twisted.logger has no per-logger levels), at INFO: setting it
to INFO changes nothing and succeeds; another level answers INVALID_REQUEST, as akfak cannot
change what it logs at run time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from akfak.errors import InvalidConfig, InvalidRequest

ROOT = "root"
LEVEL = "INFO"
VALID_LEVELS = ("DEBUG", "ERROR", "FATAL", "INFO", "TRACE", "WARN")
SET, DELETE, APPEND, SUBTRACT = 0, 1, 2, 3


def check_logger_alteration(name: str, configs: Sequence[Any], node_id: int) -> None:
    """Raises Kafka's error for an alteration of the BROKER_LOGGER resource `name`."""
    try:
        requested = int(name)
    except ValueError:
        raise InvalidRequest(f"Node id must be an integer, but it is: {name}") from None
    if requested != node_id:
        raise InvalidRequest(f"Unexpected node id. Expected {node_id}, but received {node_id}")
    for config in configs:
        operation = int(config.config_operation)
        if operation in (SET, DELETE) and config.name != ROOT:
            raise InvalidConfig(f"Logger {config.name} does not exist!")
        if operation == SET and config.value not in VALID_LEVELS:
            raise InvalidConfig(f"Cannot set the log level of {config.name} to {config.value} as it "
                                f"is not a supported log level. Valid log levels are "
                                f"{', '.join(VALID_LEVELS)}")
        if operation == DELETE:
            raise InvalidRequest(f"Removing the log level of the {ROOT} logger is not allowed")
        if operation in (APPEND, SUBTRACT):
            raise InvalidRequest(f"{'APPEND' if operation == APPEND else 'SUBTRACT'} operation is "
                                 "not allowed for the BROKER_LOGGER resource")
        if operation != SET:
            raise InvalidRequest(f"Unknown operation type {operation} is not allowed for the "
                                 "BROKER_LOGGER resource")
    changed = [c.name for c in configs if c.value != LEVEL]
    if changed:
        raise InvalidRequest(f"akfak logs at {LEVEL} and cannot change the level of {ROOT} at run time")
