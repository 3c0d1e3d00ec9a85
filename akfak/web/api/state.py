"""What the console remembers: traffic per second, recent requests, sampled rates and lag.

Kept in memory, bounded: a ring of per-second traffic buckets fed by the request events,
the request inspector's log (akfak.web.api.inspector), and every `SAMPLE_SECONDS` a sample
of each topic's end offsets and committed offsets (for produce/consume rates) and of each
group's lag (for its chart).  Sampling reads in-memory offsets only.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from akfak.group_lag import group_lags
from akfak.request_events import RequestEvent
from akfak.web.api.inspector import RequestLog

#: Seconds of per-second traffic kept (the overview's charts).
TRAFFIC_SECONDS = 300
SAMPLE_SECONDS = 2.0
#: Samples of rates and lag kept (10 minutes).
SAMPLES = 300


@dataclass
class Bucket:
    second: int
    requests: int = 0
    bytes_in: int = 0
    bytes_out: int = 0


@dataclass
class Totals:
    requests: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    connections: set[int] = field(default_factory=set)


class Traffic:
    """Requests and bytes per second for the last `TRAFFIC_SECONDS`, and totals."""

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self.buckets: deque[Bucket] = deque(maxlen=TRAFFIC_SECONDS)
        self.totals = Totals()

    def observe(self, event: RequestEvent) -> None:
        second = int(self.clock.seconds())
        if not self.buckets or self.buckets[-1].second != second:
            self.buckets.append(Bucket(second))
        bucket = self.buckets[-1]
        bucket.requests += 1
        bucket.bytes_in += event.request_size
        bucket.bytes_out += event.response_size or 0
        totals = self.totals
        totals.requests += 1
        totals.bytes_in += event.request_size
        totals.bytes_out += event.response_size or 0
        if len(totals.connections) < 100_000:
            totals.connections.add(event.connection)

    def series(self, seconds: int) -> list[dict[str, int]]:
        """One point per second (zeros where nothing happened), the last `seconds` up to
        the current one."""
        now = int(self.clock.seconds())
        by_second = {b.second: b for b in self.buckets}
        points = []
        for second in range(now - seconds + 1, now + 1):
            b = by_second.get(second) or Bucket(second)
            points.append({"t": second, "requests": b.requests, "bytes_in": b.bytes_in,
                           "bytes_out": b.bytes_out})
        return points


class Sampler:
    """Every SAMPLE_SECONDS: topic end offsets and committed offsets (rates), group lag."""

    def __init__(self, broker: Any) -> None:
        self.broker = broker
        #: (time, {topic: sum of end offsets}, {topic: sum of committed offsets})
        self.offsets: deque[tuple[float, dict[str, int], dict[str, int]]] = deque(maxlen=2)
        #: group -> deque of (time, total lag, {"topic-partition": lag})
        self.lag: dict[str, deque[tuple[float, int, dict[str, int]]]] = {}

    def sample(self) -> None:
        broker = self.broker
        if broker.storage is None:
            return
        now = broker.clock.seconds()
        ends: dict[str, int] = {}
        for topic in broker.image.topics_by_name.values():
            total = 0
            for partition in topic.partitions:
                log = broker.get_log(topic.name, partition)
                if log is not None:
                    total += log.high_watermark
            ends[topic.name] = total
        committed: dict[str, int] = {}
        lags: dict[str, tuple[int, dict[str, int]]] = {}
        for lag in group_lags(broker):
            committed[lag.topic] = committed.get(lag.topic, 0) + lag.committed
            total, parts = lags.setdefault(lag.group, (0, {}))
            parts[f"{lag.topic}-{lag.partition}"] = lag.lag
            lags[lag.group] = (total + lag.lag, parts)
        self.offsets.append((now, ends, committed))
        for group, (total, parts) in lags.items():
            self.lag.setdefault(group, deque(maxlen=SAMPLES)).append((now, total, parts))
        for group in [g for g in self.lag if g not in lags]:
            del self.lag[group]

    def rates(self, topic: str) -> dict[str, float | None]:
        """Messages per second appended to `topic`, and committed by its groups, between
        the last two samples (None before there are two)."""
        if len(self.offsets) < 2:
            return {"produce_per_s": None, "consume_per_s": None}
        (t0, ends0, committed0), (t1, ends1, committed1) = self.offsets
        span = max(t1 - t0, 1e-3)
        produced = (ends1.get(topic, 0) - ends0.get(topic, 0)) / span
        consumed = (committed1.get(topic, 0) - committed0.get(topic, 0)) / span
        return {"produce_per_s": round(max(produced, 0.0), 2),
                "consume_per_s": round(max(consumed, 0.0), 2)}


class ConsoleState:
    """What the console's API reads besides the broker itself."""

    def __init__(self, broker: Any) -> None:
        self.broker = broker
        self.started = time.time()
        self.traffic = Traffic(broker.clock)
        self.requests = RequestLog()
        self.sampler = Sampler(broker)

    @property
    def writes_allowed(self) -> bool:
        return (self.broker.config.get("akfak.http.allow.writes") or "").strip().lower() == "true"

    def observe(self, event: RequestEvent) -> None:
        self.traffic.observe(event)
        self.requests.observe(event)
