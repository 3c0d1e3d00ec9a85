"""/api/overview, /api/topics, /api/topics/NAME: the broker, its topics and partitions.

Sizes and offsets are the partition logs' own counters (nothing is read from disk);
configs come from the same resolution DescribeConfigs answers with
(akfak.broker_configs.topic_config_entries), with Kafka's config source names.
"""

from __future__ import annotations

import platform
import time
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from akfak.broker_configs import (
    SOURCE_DEFAULT,
    SOURCE_DYNAMIC_BROKER,
    SOURCE_DYNAMIC_DEFAULT_BROKER,
    SOURCE_STATIC_BROKER,
    SOURCE_TOPIC,
    topic_config_entries,
)
from akfak.metadata_image import INTERNAL_TOPICS
from akfak.web.api import Params, Query, Routes, int_param, partition_log, topic_or_404

#: DescribeConfigs' config_source ids by Kafka's names (ConfigEntry.ConfigSource).
SOURCE_NAMES = {
    SOURCE_TOPIC: "DYNAMIC_TOPIC_CONFIG",
    SOURCE_DYNAMIC_BROKER: "DYNAMIC_BROKER_CONFIG",
    SOURCE_DYNAMIC_DEFAULT_BROKER: "DYNAMIC_DEFAULT_BROKER_CONFIG",
    SOURCE_STATIC_BROKER: "STATIC_BROKER_CONFIG",
    SOURCE_DEFAULT: "DEFAULT_CONFIG",
}


def _akfak_version() -> str:
    try:
        return version("akfak")
    except PackageNotFoundError:
        return "unknown"


def overview(state: Any, params: Params, query: Query) -> dict[str, Any]:
    broker = state.broker
    seconds = int_param(query, "seconds", 120, minimum=10, maximum=300)
    topics = partitions = records = size = 0
    for topic in broker.image.topics_by_name.values():
        topics += 1
        for index in topic.partitions:
            partitions += 1
            log = broker.get_log(topic.name, index)
            if log is not None:
                records += log.high_watermark - log.log_start_offset
                size += log.size_in_bytes
    coordinator = broker.group_coordinator
    totals = state.traffic.totals
    return {
        "node_id": broker.node_id,
        "cluster_id": broker.cluster_id,
        "version": _akfak_version(),
        "python": platform.python_version(),
        "storage": broker.config.storage,
        "data_dir": str(broker.config.data_dir),
        "listeners": [{"name": listener.name, "endpoint": listener.endpoint,
                       "security_protocol": listener.security_protocol,
                       "advertised": ":".join(map(str, broker.advertised[listener.name]))
                       if listener.name in broker.advertised else None}
                      for listener in broker.config.listeners()],
        "http": broker.config.http_endpoints(),
        "writes_allowed": state.writes_allowed,
        "uptime_s": round(time.time() - state.started, 1),
        "totals": {
            "topics": topics, "partitions": partitions, "records": records, "log_bytes": size,
            "groups": 0 if coordinator is None else len(coordinator.groups),
            "requests": totals.requests, "bytes_in": totals.bytes_in,
            "bytes_out": totals.bytes_out, "connections": len(totals.connections),
        },
        "series": state.traffic.series(seconds),
    }


def _partition(broker: Any, topic: str, index: int, image: Any) -> dict[str, Any]:
    log = broker.get_log(topic, index)
    found: dict[str, Any] = {
        "partition": index, "leader": image.leader, "leader_epoch": image.leader_epoch,
        "replicas": list(image.replicas), "isr": list(image.isr),
    }
    if log is None:
        found["offline"] = True
        return found
    found.update({
        "log_start_offset": log.log_start_offset, "end_offset": log.high_watermark,
        "last_stable_offset": log.last_stable_offset,
        "records": log.high_watermark - log.log_start_offset,
        "size": log.size_in_bytes, "segments": len(log.segments),
    })
    return found


def list_topics(state: Any, params: Params, query: Query) -> list[dict[str, Any]]:
    broker = state.broker
    result = []
    for name, topic in sorted(broker.image.topics_by_name.items()):
        parts = [_partition(broker, name, i, p) for i, p in sorted(topic.partitions.items())]
        result.append({
            "name": name, "topic_id": str(topic.topic_id), "internal": name in INTERNAL_TOPICS,
            "partitions": len(parts),
            "replication_factor": topic.replication_factor,
            "records": sum(p.get("records", 0) for p in parts),
            "size": sum(p.get("size", 0) for p in parts),
            **state.sampler.rates(name),
        })
    return result


def topic_detail(state: Any, params: Params, query: Query) -> dict[str, Any]:
    broker = state.broker
    name = params["name"]
    topic = topic_or_404(broker, name)
    image = broker.image
    per_broker = image.broker_configs.get(str(broker.node_id), {})
    configs = topic_config_entries(broker.config, image.configs_of_topic(name), per_broker,
                                   image.broker_configs.get("", {}), documentation=True)
    return {
        "name": name, "topic_id": str(topic.topic_id), "internal": name in INTERNAL_TOPICS,
        "replication_factor": topic.replication_factor,
        **state.sampler.rates(name),
        "partitions": [_partition(broker, name, i, p) for i, p in sorted(topic.partitions.items())],
        "configs": [{"name": c.name, "value": c.value, "source": SOURCE_NAMES.get(c.source, c.source),
                     "synonyms": [{"name": n, "value": v, "source": SOURCE_NAMES.get(s, s)}
                                  for n, v, s in c.synonyms],
                     "documentation": c.documentation}
                    for c in configs],
    }


def segments(state: Any, params: Params, query: Query) -> list[dict[str, Any]]:
    """A partition's segments: base and next offsets, size, times, file."""
    log = partition_log(state.broker, params)
    result = []
    for segment in log.segments:
        path = getattr(segment.store, "path", None)
        result.append({
            "base_offset": segment.base_offset, "next_offset": segment.next_offset,
            "size": segment.size, "created_ms": segment.created_ms,
            "last_modified_ms": segment.last_modified_ms,
            "max_timestamp": segment.max_timestamp,
            "aborted_transactions": len(segment.txn_index.entries),
            "file": None if path is None else str(path),
        })
    return result


def add_routes(routes: Routes) -> None:
    routes.add("GET", "overview", overview)
    routes.add("GET", "topics", list_topics)
    routes.add("GET", "topics/{name}", topic_detail)
    routes.add("GET", "topics/{name}/partitions/{partition}/segments", segments)
