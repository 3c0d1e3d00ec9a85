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
"""

from __future__ import annotations

import weakref
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from akfak.quota_control import CLIENT_ID, USER, Entity

if TYPE_CHECKING:
    from akfak.protocol import KafkaProtocol, RequestContext

PRODUCE, FETCH = "producer_byte_rate", "consumer_byte_rate"
#: why the connection is not read (akfak.protocol's pause reasons)
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


class ClientQuotas:
    """The broker's quota sensors and throttled connections."""

    def __init__(self, broker: Any):
        self.broker = broker
        config = broker.config
        self.samples = max(1, config.get_int("quota.window.num", 11))
        self.window_ms = max(1, config.get_int("quota.window.size.seconds", 1)) * 1000
        self._sensors: dict[tuple[str, str, str], Rate] = {}
        self._unmute: weakref.WeakKeyDictionary[KafkaProtocol, Any] = weakref.WeakKeyDictionary()

    def _quota(self, kind: str, context: RequestContext) -> tuple[float, tuple[str, str]] | None:
        quotas = self.broker.image.client_quotas
        if not quotas:
            return None
        principal = context.principal
        user = principal.split(":", 1)[1] if ":" in principal else principal
        return resolve(quotas, kind, user, context.client_id or "")

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
