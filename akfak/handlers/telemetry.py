"""GetTelemetrySubscriptions (key 71) v0 and PushTelemetry (key 72) v0 (KIP-714).

Behavior (as Kafka 4's ClientMetricsManager with no client-metrics subscriptions):
- Not listed in ApiVersions, as Kafka lists them only when a telemetry receiver plugin is
  configured: clients then keep telemetry off, quietly.  A client that asks anyway gets
  Kafka's answers.
- GetTelemetrySubscriptions: the client instance id it sent, or a new random one for the
  zero or null id; no requested metrics; accepted compression types zstd, lz4, gzip, snappy;
  push interval 300000 ms (Kafka's default); telemetry_max_bytes 1048576
  (telemetry.max.bytes); delta temporality; and the subscription id Kafka computes:
  CRC32C of "[]300000" XOR the Java hashCode of the instance id, so it needs no state.
- PushTelemetry: a null or reserved (zero, one) instance id answers INVALID_REQUEST; a
  subscription id other than the instance's UNKNOWN_SUBSCRIPTION_ID; an unknown compression
  type UNSUPPORTED_COMPRESSION_TYPE; metrics over telemetry.max.bytes TELEMETRY_TOO_LARGE;
  anything else NONE, the metrics dropped (no receiver).
- akfak keeps no per-client state, so it does not throttle early requests
  (THROTTLING_QUOTA_EXCEEDED) as Kafka does within a push interval.
- No ACL is checked, as in Kafka.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import crc32c
from kio.schema.errors import ErrorCode
from kio.static.primitive import i8, i32, i32Timedelta

from akfak.handlers.base import NO_THROTTLE, Handler
from akfak.protocol import RequestContext

PUSH_INTERVAL_MS = 300_000
TELEMETRY_MAX_BYTES = 1024 * 1024
#: ZSTD, LZ4, GZIP, SNAPPY: Kafka's order; NONE (0) is always accepted.
ACCEPTED_COMPRESSION = (4, 3, 1, 2)
COMPRESSION_TYPES = range(5)
#: Kafka's Uuid.RESERVED: the zero id and the metadata topic's id (1).
RESERVED_IDS = (uuid.UUID(int=0), uuid.UUID(int=1))


def _int32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def subscription_id(instance_id: uuid.UUID) -> int:
    """Kafka's computeSubscriptionId for no metrics at the default push interval."""
    bits = (instance_id.int >> 64) ^ (instance_id.int & (1 << 64) - 1)
    java_hash = _int32((bits >> 32) ^ bits)
    return _int32(crc32c.crc32c(f"[]{PUSH_INTERVAL_MS}".encode())) ^ java_hash


class GetTelemetrySubscriptionsHandler(Handler):
    api_key = 71
    min_version = 0
    max_version = 0
    advertised = False

    def handle(self, request: Any, context: RequestContext) -> Any:
        instance_id = request.client_instance_id
        if instance_id is None or instance_id == RESERVED_IDS[0]:
            instance_id = uuid.uuid4()
        return self.response_type(context.api_version)(
            throttle_time=NO_THROTTLE, error_code=ErrorCode.none, client_instance_id=instance_id,
            subscription_id=i32(subscription_id(instance_id)),
            accepted_compression_types=tuple(i8(c) for c in ACCEPTED_COMPRESSION),
            push_interval=i32Timedelta.parse(timedelta(milliseconds=PUSH_INTERVAL_MS)),
            telemetry_max_bytes=i32(TELEMETRY_MAX_BYTES), delta_temporality=True,
            requested_metrics=())


class PushTelemetryHandler(Handler):
    api_key = 72
    min_version = 0
    max_version = 0
    advertised = False

    def handle(self, request: Any, context: RequestContext) -> Any:
        instance_id = request.client_instance_id
        if instance_id is None or instance_id in RESERVED_IDS:
            error = ErrorCode.invalid_request
        elif int(request.subscription_id) != subscription_id(instance_id):
            error = ErrorCode.unknown_subscription_id
        elif int(request.compression_type) not in COMPRESSION_TYPES:
            error = ErrorCode.unsupported_compression_type
        elif request.metrics is not None and len(request.metrics) > TELEMETRY_MAX_BYTES:
            error = ErrorCode.telemetry_too_large
        else:
            error = ErrorCode.none
        return self.response_type(context.api_version)(throttle_time=NO_THROTTLE,
                                                       error_code=error)


HANDLERS = (GetTelemetrySubscriptionsHandler, PushTelemetryHandler)
