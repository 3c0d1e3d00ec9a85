"""Client quota enforcement, as Kafka's ClientQuotaManager and its DefaultQuotaCallback.

- The quota for a request is the first entity in this order that sets the key (produce:
  `producer_byte_rate`, fetch: `consumer_byte_rate`): user+client-id, user+default
  client-id, user, default user+client-id, default user+default client-id, default user,
  client-id, default client-id. The user is the principal's name (after "User:").
- Usage is counted per sensor, as Kafka's metric tags: the user and/or client-id of the
  entity that matched (a default entity still counts each user or client apart).
- The rate is Kafka's Rate over `quota.window.num` samples of `quota.window.size.seconds`:
  the sum of the retained samples over the time since the oldest, taken as at least
  `num - 1` full windows. A request that takes it over the quota is throttled for
  `(rate - quota) / quota * window` ms (Kafka's QuotaUtils.throttleTime).
- Throttling (KIP-219): the response carries the time in `throttle_time_ms` and goes out at
  once; the connection is then not read for that time (Kafka mutes the channel), and the
  client also waits before its next request to the broker.
- `request_percentage` (Kafka's ClientRequestQuotaManager): the reactor time a request took
  to decode and handle, as a percentage of one thread over the same windows (the time its
  response took to encode is counted too, as Kafka's network-thread time, without throttling
  that response); the throttle is at most one window. Every response that has
  `throttle_time` carries the larger of it and the API's own throttle (a throttled Fetch is
  answered empty). Exempt, as Kafka exempts
  cluster actions and the authentication exchange: SaslHandshake, SaslAuthenticate,
  WriteTxnMarkers, and Produce with acks=0.
- `controller_mutation_rate` (Kafka's ControllerMutationQuotaManager): partitions created or
  deleted per second, a token bucket of `controller.quota.window.num` x
  `controller.quota.window.size.seconds` of burst. Strict (CreateTopics v6+, CreatePartitions
  v3+, DeleteTopics v5+): once the bucket is negative each topic answers
  THROTTLING_QUOTA_EXCEEDED, but a topic is never refused while there are tokens, however many
  partitions it takes. Permissive (older versions): everything is done and the response is
  throttled for the time the bucket needs to be back at zero.
- Connection creation (Kafka's ConnectionQuotas), both Rates over the client quota windows
  with throttles of at most one window: `max.connection.creation.rate` (broker-wide, and per
  listener with `listener.name.<l>.max.connection.creation.rate`): a connection over it is
  served only after the throttle time, and the listeners stop accepting until then (Kafka's
  acceptor waits). `connection_creation_rate` of an `ip` entity (or the default ip): a
  connection over it is not counted and is closed after the throttle time (Kafka's delayed
  close). IP entities match by address literal.
"""

from __future__ import annotations

import ipaddress
import time
import weakref
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from akfak.errors import ThrottlingQuotaExceeded
from akfak.quota_control import CLIENT_ID, IP, USER, Entity

if TYPE_CHECKING:
    from akfak.protocol import KafkaProtocol, RequestContext

PRODUCE, FETCH = "producer_byte_rate", "consumer_byte_rate"
REQUEST, MUTATION = "request_percentage", "controller_mutation_rate"
CONNECTIONS = "connection_creation_rate"
#: Kafka's "no limit" for connection creation rates (Int.MaxValue)
UNLIMITED_RATE = 2**31 - 1
#: APIs whose time is not held against request_percentage (Kafka: cluster actions, and the
#: authentication exchange, which its authenticator answers before KafkaApis)
EXEMPT_APIS = frozenset({17, 27, 36})
#: why the connection is not read (akfak.protocol_base's pause reasons)
THROTTLED = "client quota throttle"


def resolve(quotas: Mapping[Entity, Mapping[str, float]], key: str, user: str, client_id: str
            ) -> tuple[float, tuple[str, str]] | None:
    """The quota `key` for (user, client-id) and its sensor's tags, or None: unlimited."""
    candidates: tuple[tuple[Entity, tuple[str, str]], ...] = (
        (((CLIENT_ID, client_id), (USER, user)), (user, client_id)),
        (((CLIENT_ID, None), (USER, user)), (user, client_id)),
        (((USER, user),), (user, "")),
        (((CLIENT_ID, client_id), (USER, None)), (user, client_id)),
        (((CLIENT_ID, None), (USER, None)), (user, client_id)),
        (((USER, None),), (user, "")),
        (((CLIENT_ID, client_id),), ("", client_id)),
        (((CLIENT_ID, None),), ("", client_id)),
    )
    for entity, tags in candidates:
        values = quotas.get(entity)
        if values is not None and key in values:
            return values[key], tags
    return None


def _address(name: str) -> str:
    try:
        return str(ipaddress.ip_address(name.strip("[]")))
    except ValueError:
        return name


class Rate:
    """Kafka's Rate over a SampledStat: per-second value of the retained samples."""

    def __init__(self, samples: int, window_ms: int):
        self.window_ms = window_ms
        self.count = samples
        self.samples: deque[list[float]] = deque()  # [start ms, value]

    def record(self, value: float, now_ms: float) -> None:
        samples = self.samples
        if not samples or now_ms - samples[-1][0] >= self.window_ms:
            samples.append([now_ms, 0.0])
            if len(samples) > self.count:
                samples.popleft()
        samples[-1][1] += value

    def measure(self, now_ms: float) -> tuple[float, float]:
        """(rate per second, window ms it is over)."""
        samples = self.samples
        expire = self.count * self.window_ms
        while samples and now_ms - samples[0][0] >= expire:
            samples.popleft()
        elapsed = now_ms - samples[0][0] if samples else 0.0
        full = int(elapsed // self.window_ms)
        if full < self.count - 1:
            elapsed += (self.count - 1 - full) * self.window_ms
        window = max(elapsed, 1.0)
        return sum(v for _, v in samples) * 1000.0 / window, window


class TokenBucket:
    """Kafka's TokenBucket: `quota` tokens a second up to a burst of `seconds` x quota;
    a fresh one is full."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.tokens: float | None = None
        self.updated_ms = 0.0

    def measure(self, quota: float, now_ms: float) -> float:
        burst = self.seconds * quota
        if self.tokens is None:
            self.tokens = burst
        else:
            self.tokens = min(burst, self.tokens + quota * (now_ms - self.updated_ms) / 1000)
        self.updated_ms = now_ms
        return self.tokens

    def record(self, quota: float, value: float, now_ms: float) -> float:
        self.tokens = self.measure(quota, now_ms) - value
        return self.tokens


class MutationQuota:
    """One request's controller_mutation_rate (Kafka's Strict / PermissiveControllerMutationQuota)."""

    def __init__(self, bucket: TokenBucket, quota: float, strict: bool, clock: Any):
        self.bucket = bucket
        self.quota = quota
        self.strict = strict
        self.clock = clock
        self._throttle_ms = 0
        self._at_ms = 0.0

    def record(self, permits: int) -> None:
        """Count `permits` partition mutations; raises ThrottlingQuotaExceeded (strict)."""
        now = self.clock.seconds() * 1000.0
        if self.strict:
            tokens = self.bucket.measure(self.quota, now)
            if tokens < 0:
                self._throttled(tokens, now)
                raise ThrottlingQuotaExceeded()
            self.bucket.record(self.quota, permits, now)
            return
        tokens = self.bucket.record(self.quota, permits, now)
        if tokens < 0:
            self._throttled(tokens, now)

    def _throttled(self, tokens: float, now_ms: float) -> None:
        self._throttle_ms = round(-tokens / self.quota * 1000)
        self._at_ms = now_ms

    @property
    def throttle_ms(self) -> int:
        """What is left of the throttle time last computed (Kafka deducts the time since)."""
        elapsed = self.clock.seconds() * 1000.0 - self._at_ms
        return max(0, int(self._throttle_ms - elapsed))


class ClientQuotas:
    """The broker's quota sensors and throttled connections."""

    def __init__(self, broker: Any):
        self.broker = broker
        config = broker.config
        self.samples = max(1, config.get_int("quota.window.num", 11))
        self.window_ms = max(1, config.get_int("quota.window.size.seconds", 1)) * 1000
        self.mutation_seconds = (max(1, config.get_int("controller.quota.window.num", 11))
                                 * max(1, config.get_int("controller.quota.window.size.seconds", 1)))
        self._sensors: dict[tuple[str, str, str], Rate] = {}
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self._unmute: weakref.WeakKeyDictionary[KafkaProtocol, Any] = weakref.WeakKeyDictionary()

    def _quota(self, kind: str, context: RequestContext) -> tuple[float, tuple[str, str]] | None:
        quotas = self.broker.image.client_quotas
        if not quotas:
            return None
        principal = context.principal
        user = principal.split(":", 1)[1] if ":" in principal else principal
        return resolve(quotas, kind, user, context.client_id or "")

    @property
    def enabled(self) -> bool:
        return bool(self.broker.image.client_quotas)

    def max_in_window(self, kind: str, context: RequestContext) -> float | None:
        """What one request may carry without being throttled for sure (Kafka's
        getMaxValueInQuotaWindow, which bounds a Fetch's max_bytes); None: unlimited."""
        found = self._quota(kind, context)
        return None if found is None else found[0] * (self.samples - 1) * self.window_ms / 1000

    def record(self, kind: str, context: RequestContext, value: float) -> int:
        """Count `value` bytes for the request's client; the throttle time in ms (0: none)."""
        found = self._quota(kind, context)
        if found is None:
            return 0
        bound, tags = found
        rate = self._sensors.get((kind, *tags))
        if rate is None:
            rate = self._sensors[(kind, *tags)] = Rate(self.samples, self.window_ms)
        now = self.broker.clock.seconds() * 1000.0
        rate.record(value, now)
        observed, window = rate.measure(now)
        if observed <= bound:
            return 0
        return round((observed - bound) / bound * window)

    def record_request(self, context: RequestContext) -> int:
        """Count the request's reactor time against request_percentage, once; the throttle
        time in ms (0: none), at most one window (Kafka's boundedThrottleTime)."""
        if context.request_recorded:
            return 0
        context.request_recorded = True
        if context.header.api_key in EXEMPT_APIS or not self.enabled:
            return 0
        handled = context.handled
        seconds = time.perf_counter() - context.started if handled is None else handled
        return min(self.record(REQUEST, context, seconds * 100.0), self.window_ms)

    def record_encoding(self, context: RequestContext, seconds: float) -> None:
        """Count the time encoding a response took against request_percentage without
        throttling for it (Kafka's network-thread time, recordNoThrottle)."""
        if context.header.api_key not in EXEMPT_APIS and self.enabled:
            self.record(REQUEST, context, seconds * 100.0)

    def mutation_quota(self, context: RequestContext, strict_since: int) -> MutationQuota | None:
        """The request's controller_mutation_rate quota, strict from version `strict_since`;
        None: unlimited."""
        found = self._quota(MUTATION, context)
        if found is None:
            return None
        bound, tags = found
        bucket = self._buckets.get(tags)
        if bucket is None:
            bucket = self._buckets[tags] = TokenBucket(self.mutation_seconds)
        return MutationQuota(bucket, bound, context.api_version >= strict_since, self.broker.clock)

    def new_connection(self, listener: str, host: str) -> tuple[int, int]:
        """Count a connection being accepted: (ms to wait before serving it, ms after which
        to close it instead; 0: none)."""
        now = self.broker.clock.seconds() * 1000.0
        config = self.broker.config
        rate = config.get_int("max.connection.creation.rate", UNLIMITED_RATE)
        prefixed = config.get(f"listener.name.{listener.lower()}.max.connection.creation.rate")
        listener_rate = int(prefixed) if prefixed else rate
        delay = 0
        counted = []
        for key, bound in ((("", "broker"), rate), ((listener, "listener"), listener_rate)):
            if bound < UNLIMITED_RATE:
                counted.append(key)
                delay = max(delay, self._connection(key, bound, now, 1.0))
        ip_rate = self._ip_rate(host)
        if ip_rate is None:
            return delay, 0
        close = self._connection((host, IP), ip_rate, now, 1.0)
        if close > 0:
            # as Kafka: a connection that is refused is not counted, here or broker-wide
            self._connection((host, IP), ip_rate, now, -1.0)
            for key in counted:
                self._connection(key, UNLIMITED_RATE, now, -1.0)
        return delay, close

    def _connection(self, tags: tuple[str, str], bound: float, now_ms: float, value: float) -> int:
        rate = self._sensors.get((CONNECTIONS, *tags))
        if rate is None:
            rate = self._sensors[(CONNECTIONS, *tags)] = Rate(self.samples, self.window_ms)
        rate.record(value, now_ms)
        observed, window = rate.measure(now_ms)
        if value < 0 or observed <= bound:
            return 0
        return min(self.window_ms, round((observed - bound) / bound * window))

    def _ip_rate(self, host: str) -> float | None:
        quotas = self.broker.image.client_quotas
        if not quotas:
            return None
        default = None
        for entity, values in quotas.items():
            (kind, name), *rest = entity
            if kind != IP or rest or CONNECTIONS not in values:
                continue
            if name is None:
                default = values[CONNECTIONS]
            elif _address(name) == host:
                return values[CONNECTIONS]
        return default

    def unrecord(self, kind: str, context: RequestContext, value: float) -> None:
        """Take back what a throttled Fetch counted (Kafka sends it nothing)."""
        self.record(kind, context, -value)

    def throttle(self, connection: KafkaProtocol, throttle_ms: int) -> None:
        """Stop reading `connection` for `throttle_ms` (extending a throttle under way)."""
        if throttle_ms <= 0:
            return
        clock = self.broker.clock
        call = self._unmute.get(connection)
        if call is not None and call.active():
            remaining = call.getTime() - clock.seconds()
            if remaining * 1000 >= throttle_ms:
                return
            call.cancel()
        connection.pause(THROTTLED)
        self._unmute[connection] = clock.callLater(throttle_ms / 1000, self._resume, connection)

    def _resume(self, connection: KafkaProtocol) -> None:
        self._unmute.pop(connection, None)
        connection.unpause(THROTTLED)
