"""What serving /metrics costs: produce throughput with and without a scraper, and how long a
scrape holds the reactor on a broker with many partitions.

    .venv/bin/python benchmarks/web_load.py [--records 200000] [--size 100] [--rounds 2]
        [--partitions 10000] [--interval 0.1] [--storage memory]

1. Throughput: confluent-kafka produces `--records` values of `--size` bytes (acks=all,
   linger.ms=5, as client_bench.py) to a one-partition topic, alternately without and with a
   scraper thread fetching /metrics every `--interval` seconds, and with that scraper plus the
   console open (its overview and request inspector polled every second, as the pages do),
   `--rounds` times each; prints records/s of every run, the best and median of each kind and
   the medians' ratios.
2. Reactor hold: the broker gets topics of 1,000 partitions up to `--partitions`, then a
   client sends ApiVersions requests one after another for `--seconds`, without the scraper,
   with it every `--interval` seconds and every second; prints the round trips' median, 99th
   percentile and maximum (whatever holds the broker's reactor or its GIL for X ms shows as
   a round trip of about X ms), the scrapes' time and size, and what the scrapes say of
   themselves: how long their reads held the reactor in all and in their longest turn.

The broker is a `python -m akfak` subprocess (tests/brokers.py) with HTTP on a free loopback
port.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.client_bench import Target  # noqa: E402
from benchmarks.client_bench import produce as client_bench_produce  # noqa: E402
from tests.brokers import free_port, start_process  # noqa: E402
from tests.wire import WireClient, encode_request  # noqa: E402

API_VERSIONS = 18


class Scraper(threading.Thread):
    """GET /metrics every `interval` seconds until stopped; keeps each scrape's time and size."""

    def __init__(self, url: str, interval: float) -> None:
        super().__init__(daemon=True)
        self.url, self.interval = url, interval
        self.stopping = threading.Event()
        self.times: list[float] = []
        self.sizes: list[int] = []
        #: what each scrape says of itself: (reactor seconds in all, longest turn, turns,
        #: the reactor thread's CPU seconds in all, in the longest turn)
        self.turns: list[tuple[float, ...]] = []

    def run(self) -> None:
        while not self.stopping.is_set():
            started = time.perf_counter()
            with urllib.request.urlopen(self.url, timeout=60) as response:
                body = response.read()
            took = time.perf_counter() - started
            self.times.append(took)
            self.sizes.append(len(body))
            own = {}
            for line in body.decode().splitlines():
                if line.startswith("akfak_metrics_scrape_"):
                    name, _, value = line.partition(" ")
                    own[name] = float(value)
            self.turns.append((own["akfak_metrics_scrape_reactor_seconds"],
                               own["akfak_metrics_scrape_longest_turn_seconds"],
                               own["akfak_metrics_scrape_turns"],
                               own["akfak_metrics_scrape_reactor_cpu_seconds"],
                               own["akfak_metrics_scrape_longest_turn_cpu_seconds"]))
            self.stopping.wait(max(0.0, self.interval - took))

    def stop(self) -> None:
        self.stopping.set()
        self.join(60)


class Console(threading.Thread):
    """What an open console page asks for: /api/overview and the inspector's new requests,
    once a second (the pages' polling interval)."""

    def __init__(self, base: str) -> None:
        super().__init__(daemon=True)
        self.base = base
        self.stopping = threading.Event()
        self.polls = 0

    def run(self) -> None:
        since = 0
        while not self.stopping.is_set():
            with urllib.request.urlopen(self.base + "api/overview?seconds=120", timeout=60) as r:
                r.read()
            with urllib.request.urlopen(f"{self.base}api/requests?since={since}", timeout=60) as r:
                since = json.loads(r.read())["last"]
            self.polls += 1
            self.stopping.wait(1.0)

    def stop(self) -> None:
        self.stopping.set()
        self.join(60)


def create_topic(admin: AdminClient, name: str, partitions: int) -> None:
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(120)


def produce(bootstrap: str, topic: str, records: int, value: bytes) -> float:
    """Records/s of client_bench.py's produce loop (acks=all, linger.ms=5, uncompressed)."""
    target = Target(bootstrap, 0, {}, bootstrap)
    return records / client_bench_produce(target, topic, records, value, "none")


def round_trips(port: int, seconds: float) -> list[float]:
    """ApiVersions v0 round trips (ms), one after another, for `seconds`."""
    found = []
    with WireClient(port) as client:
        deadline = time.perf_counter() + seconds
        correlation = 0
        while time.perf_counter() < deadline:
            correlation += 1
            started = time.perf_counter()
            client.send(encode_request(API_VERSIONS, 0, correlation, b""))
            client.recv_frame()
            found.append((time.perf_counter() - started) * 1000)
    return found


def describe(trips: list[float]) -> str:
    ordered = sorted(trips)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (f"{len(trips)} round trips: median {statistics.median(ordered):.2f} ms, "
            f"p99 {p99:.2f} ms, max {ordered[-1]:.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--partitions", type=int, default=10_000)
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between scrapes")
    parser.add_argument("--seconds", type=float, default=5.0, help="of round trips, each way")
    parser.add_argument("--storage", default="memory", choices=["disk", "memory"])
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="akfak-web-load-") as tmp:
        http = free_port()
        broker = start_process(Path(tmp) / "data", "--storage", args.storage, "--http",
                               f"tcp:{http}:interface=127.0.0.1")
        url = f"http://127.0.0.1:{http}/metrics"
        try:
            admin = AdminClient({"bootstrap.servers": broker.bootstrap})
            create_topic(admin, "web-load", 1)
            value = b"x" * args.size
            produce(broker.bootstrap, "web-load", args.records // 10, value)  # warm-up
            kinds = ("without scraper", "with scraper", "with scraper and console")
            rates: dict[str, list[float]] = {kind: [] for kind in kinds}
            for _ in range(args.rounds):
                for kind in kinds:
                    scraper = Scraper(url, args.interval) if kind != kinds[0] else None
                    console = Console(url.removesuffix("metrics")) if kind == kinds[2] else None
                    for thread in (scraper, console):
                        if thread is not None:
                            thread.start()
                    rate = produce(broker.bootstrap, "web-load", args.records, value)
                    if console is not None:
                        console.stop()
                    if scraper is not None:
                        scraper.stop()
                        print(f"  {len(scraper.times)} scrapes, median "
                              f"{statistics.median(scraper.times) * 1000:.1f} ms"
                              + (f"; {console.polls} console polls" if console else ""))
                    rates[kind].append(rate)
                    print(f"produce {kind}: {rate:,.0f} records/s")
            for kind, found in rates.items():
                print(f"{kind}: best {max(found):,.0f}, median {statistics.median(found):,.0f} records/s")
            without = statistics.median(rates[kinds[0]])
            for kind in kinds[1:]:
                print(f"median {kind} / without: {statistics.median(rates[kind]) / without:.3f}")

            made = 1
            while made < args.partitions:
                count = min(1000, args.partitions - made)
                create_topic(admin, f"web-load-{made}", count)
                made += count
            time.sleep(1)
            print(f"{made} partitions:")
            print(f"  without scraper: {describe(round_trips(broker.port, args.seconds))}")
            for interval in (args.interval, 1.0):
                scraper = Scraper(url, interval)
                scraper.start()
                trips = round_trips(broker.port, args.seconds)
                scraper.stop()
                reactor = [t[0] * 1000 for t in scraper.turns]
                longest = [t[1] * 1000 for t in scraper.turns]
                turns = statistics.median(t[2] for t in scraper.turns)
                cpu = [t[3] * 1000 for t in scraper.turns]
                longest_cpu = [t[4] * 1000 for t in scraper.turns]
                print(f"  scraped every {interval:g} s: {describe(trips)}")
                print(f"    {len(scraper.times)} scrapes of {statistics.median(scraper.sizes) / 1e6:.1f} MB, "
                      f"median {statistics.median(scraper.times) * 1000:.0f} ms, "
                      f"max {max(scraper.times) * 1000:.0f} ms; reads on the reactor: median "
                      f"{statistics.median(reactor):.0f} ms in {turns:.0f} turns, "
                      f"longest turn {max(longest):.1f} ms; their CPU time: median "
                      f"{statistics.median(cpu):.0f} ms, longest turn {max(longest_cpu):.1f} ms")
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
