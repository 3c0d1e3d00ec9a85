"""`twistd akfak`: command-line options and the service they make."""

from __future__ import annotations

import os
from typing import Any

from twisted.application.service import IService
from twisted.python import usage

from akfak.config import DEFAULT_HTTP, BrokerConfig, ConfigError, apply_overrides
from akfak.log.postgres import is_postgres_url
from akfak.security.inter_broker import inter_broker
from akfak.security.sasl import SaslSettings
from akfak.security.tls import server_tls
from akfak.service import makeService as _makeService
from akfak.service import own_process


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Run akfak, a Kafka-compatible broker. Options override the values read from "
        "--config (an Apache Kafka server.properties)."
    )
    optParameters = [
        ["config", "c", None, "An Apache Kafka server.properties file to read."],
        ["data-dir", "d", None, "Log directory (Kafka's log.dirs) [default: /tmp/kafka-logs]."],
        ["storage", None, None, "Storage provider: disk (Kafka's format), memory, or a "
         "postgresql://USER@HOST:PORT/DB URL [default: akfak.storage, else disk]."],
        ["node-id", None, None, "This broker's node.id."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["override"] = []
        self["http"] = []

    def opt_listen(self, endpoint: str) -> None:
        """A Twisted server endpoint string to listen on (repeatable)
        [default: tcp:9092:interface=127.0.0.1]."""
        self["listen"].append(endpoint)

    def opt_http(self, endpoint: str) -> None:
        """A Twisted server endpoint string to serve /metrics and the web console on
        (repeatable; "none" for no HTTP) [default: akfak.http.listeners, else
        tcp:8080:interface=127.0.0.1]."""
        self["http"].append(endpoint)

    def opt_override(self, assignment: str) -> None:
        """Set a broker property, key=value, as kafka-server-start's --override (repeatable)."""
        self["override"].append(assignment)

    opt_o = opt_override

    def postOptions(self) -> None:
        try:
            self.config = build_config(
                config=self["config"],
                data_dir=self["data-dir"],
                listen=self["listen"],
                overrides=self["override"],
                storage=self["storage"],
                http=self["http"] or None,
                http_default=DEFAULT_HTTP,
                node_id=self["node-id"],
            )
        except (OSError, ConfigError) as e:
            raise usage.UsageError(str(e)) from e


def build_config(
    *,
    config: str | None = None,
    data_dir: str | None = None,
    listen: list[str] | None = None,
    overrides: list[str] | None = None,
    storage: str | None = None,
    node_id: str | None = None,
    http: list[str] | None = None,
    http_default: str | None = None,
) -> BrokerConfig:
    """A BrokerConfig from a server.properties file and command-line style overrides.

    `http` (endpoint strings) replaces `akfak.http.listeners`; `http_default` is served when
    neither names one (the daemon's console on loopback; none for embedded brokers)."""
    result = BrokerConfig.from_file(config) if config else BrokerConfig()
    apply_overrides(result, overrides or [])
    if data_dir:
        result.override("log.dirs", data_dir)
    result.listen = list(listen or [])
    if node_id is not None:
        result.override("node.id", node_id)
    storage = storage or result.get("akfak.storage") or "disk"
    if storage not in ("disk", "memory") and not is_postgres_url(storage):
        raise ConfigError(f"--storage must be disk, memory or a postgresql:// URL, not {storage!r}")
    result.storage = storage
    if http is not None:
        result.http = list(http)
    elif http_default and "akfak.http.listeners" not in result.properties:
        result.http = [http_default]
    # fail now, not at start, on unusable listeners or TLS settings
    for listener in result.listeners():
        if listener.tls:
            server_tls(result, listener)
    if is_postgres_url(storage):  # a cluster: its brokers connect to each other
        inter_broker(result, SaslSettings(result))
    return result


def config_from_environment(environ: Any = os.environ) -> BrokerConfig:
    """For akfak.tac: AKFAK_CONFIG, AKFAK_DATA_DIR, AKFAK_LISTEN and AKFAK_HTTP
    (space-separated endpoint strings), AKFAK_OVERRIDE (space-separated key=value),
    AKFAK_STORAGE."""
    return build_config(
        config=environ.get("AKFAK_CONFIG") or None,
        data_dir=environ.get("AKFAK_DATA_DIR") or None,
        listen=environ.get("AKFAK_LISTEN", "").split(),
        overrides=environ.get("AKFAK_OVERRIDE", "").split(),
        storage=environ.get("AKFAK_STORAGE") or None,
        http=environ.get("AKFAK_HTTP", "").split() or None,
        http_default=DEFAULT_HTTP,
    )


def makeService(options: Options) -> IService:
    own_process()  # twistd akfak, python -m akfak
    return _makeService(options.config)
