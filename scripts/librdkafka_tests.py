"""librdkafka's own test suite (its tests/test-runner) against akfak: a 3-broker cluster over
one PostgreSQL, optionally a single broker and a 3-node Apache Kafka 4.1.1 for comparison.

    .venv/bin/python scripts/librdkafka_tests.py [--targets akfak3,akfak1,kafka3]
        [--tests 0103,0129,...] [--cache DIR]
        [--source https://github.com/confluentinc/librdkafka] [--commit SHA]
        [--timeout 600] [--full]
    .venv/bin/python scripts/librdkafka_tests.py --serve akfak3   # keep one running

Not part of the test suite (it takes minutes per target). Steps:
1. librdkafka at the pinned `--commit`, cloned from `--source` (a URL or a local git
   directory) into `--cache`, built there once with CMake without SSL, SASL, zstd and curl
   (`make -j2 test-runner`, about 5 minutes on two cores, under nice);
2. each target in turn, set up as librdkafka's trivup sets up its test clusters
   (`num.partitions=4`, `default.replication.factor=3`, the StandardAuthorizer with
   `allow.everyone.if.no.acl.found=true`):
   - akfak3: a throwaway PostgreSQL (tests/postgres.py) and three brokers over it
     (tests/cluster.py), replication factor 3 for real, `__transaction_state` and
     `__consumer_offsets` with 3 replicas;
   - akfak1: one broker (disk storage) with `akfak.accept.any.replication.factor=true`, as a
     one-broker trivup cluster asks for replication factor 3 all the same;
   - kafka3: three combined broker+controller KRaft nodes (tests/kafka_peer.py's classpath),
     `transaction.state.log.min.isr=2` as trivup's, and `super.users=User:ANONYMOUS` (the
     quorum's own requests are ANONYMOUS on PLAINTEXT);
3. every test number on its own test-runner (`-Q` quick mode unless `--full`: quick mode
   skips the subtests not marked quick, which leaves some tests empty; `-L` broker tests
   only, not the local ones such as the mock cluster's; `-E` no sockem,
   TEST_KAFKA_VERSION=4.1.1, a timeout each), and a table of PASSED / FAILED / SKIPPED per
   test and target (the reason for failures and skips below it). Exit status 1 if an akfak
   target failed a test that passed on Kafka.
Logs (test-runner output and brokers') stay in a temporary directory printed at the start.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

COMMIT = "4c3b017c3de8d9c10de12b9eec0ea688e8d5787d"  # librdkafka master, July 2026
SOURCE = "https://github.com/confluentinc/librdkafka"
CACHE = Path(os.environ.get("AKFAK_LIBRDKAFKA_CACHE",
                            Path.home() / ".cache" / "akfak-librdkafka"))
# Transactions, replication factor 3 and several brokers (0098 needs RapidJSON and Java's
# TransactionProducerCli: skipped in this build; 0105 is the mock cluster).
DEFAULT_TESTS = ("0055 0061 0081 0093 0098 0099 0102 0103 0107 0113 0118 0122 0125 0129 0137 "
                 "0140")
TRIVUP = {
    "num.partitions": "4",
    "default.replication.factor": "3",
    "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
    "allow.everyone.if.no.acl.found": "true",
}
ANSI = re.compile(r"\x1b\[[0-9;]*m")
ROW = re.compile(r"^\|\s*(\d{4}_\S+)\s*\|\s*(\w+)\s*\|\s*[\d.]+s\s*\|\s*(.*)$")


def run(command: list[str], cwd: Path, log: Path) -> None:
    with open(log, "ab") as out:
        subprocess.run(["nice", *command], cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                       check=True)


def runner_path(cache: Path = CACHE, commit: str = COMMIT) -> Path:
    """Where build() leaves the test-runner of librdkafka `commit`."""
    return cache / f"librdkafka-{commit[:12]}" / "build" / "tests" / "test-runner"


def build(cache: Path, source: str, commit: str) -> Path:
    """The test-runner of librdkafka `commit` (cloned and built in `cache` once)."""
    runner = runner_path(cache, commit)
    checkout = runner.parents[2]
    if runner.exists():
        return runner
    cache.mkdir(parents=True, exist_ok=True)
    log = cache / f"build-{commit[:12]}.log"
    print(f"building librdkafka {commit[:12]} in {checkout} (log {log})", flush=True)
    if not (checkout / ".git").exists():
        run(["git", "clone", "--quiet", "--no-checkout", source, str(checkout)], cache, log)
    run(["git", "checkout", "--quiet", commit], checkout, log)
    (checkout / "build").mkdir(exist_ok=True)
    run(["cmake", "..", "-DWITH_SSL=OFF", "-DWITH_SASL=OFF", "-DWITH_ZSTD=OFF",
         "-DWITH_CURL=OFF", "-DRDKAFKA_BUILD_EXAMPLES=OFF", "-DRDKAFKA_BUILD_TESTS=ON"],
        checkout / "build", log)
    run(["make", "-j2", "test-runner"], checkout / "build", log)
    return runner


@contextmanager
def akfak_cluster(base: Path, n: int, extra: dict[str, str]) -> Iterator[str]:
    from tests.cluster import AkfakCluster
    from tests.postgres import PostgresServer

    pg = PostgresServer.start()
    cluster = None
    try:
        cluster = AkfakCluster.start(pg.new_database(), base, n, properties={**TRIVUP, **extra})
        yield cluster.bootstrap
    finally:
        if cluster is not None:
            cluster.stop()
        pg.stop()


@contextmanager
def akfak_single(base: Path, extra: dict[str, str]) -> Iterator[str]:
    from tests.brokers import start_process

    overrides = {**TRIVUP, "akfak.accept.any.replication.factor": "true", **extra}
    broker = start_process(base / "data", *(a for k, v in overrides.items()
                                            for a in ("--override", f"{k}={v}")),
                           log_path=base / "broker.log")
    try:
        yield f"127.0.0.1:{broker.port}"
    finally:
        broker.stop()


@contextmanager
def kafka_cluster(base: Path, n: int, extra: dict[str, str]) -> Iterator[str]:
    from tests.kafka_peer import start_kafka_cluster

    # The quorum's Vote requests come as ANONYMOUS on PLAINTEXT: without it as a super user
    # the StandardAuthorizer refuses them before its first ACL load, and no leader is elected.
    cluster = start_kafka_cluster(base, n, {**TRIVUP, "transaction.state.log.min.isr": "2",
                                            "super.users": "User:ANONYMOUS", **extra})
    try:
        yield cluster.bootstrap
    finally:
        cluster.stop()


TARGETS: dict[str, Callable[[Path, dict[str, str]], Any]] = {
    "akfak3": lambda base, extra: akfak_cluster(base, 3, extra),
    "akfak1": akfak_single,
    "kafka3": lambda base, extra: kafka_cluster(base, 3, extra),
}
#: tests that run only in a test-runner scenario (their _TEST's .scenario), and the broker
#: properties trivup sets for that scenario
SCENARIOS = {"0107": "noautocreate"}
SCENARIO_PROPERTIES = {"default": {}, "noautocreate": {"auto.create.topics.enable": "false"}}


def run_test(runner: Path, number: str, bootstrap: str, work: Path, scenario: str,
             timeout: float, quick: bool = True) -> tuple[str, str]:
    """(state, reason) of one test number on its own test-runner."""
    conf = work / "test.conf"
    conf.write_text(f"bootstrap.servers={bootstrap}\ntest.timeout.multiplier=2\n")
    log = work / f"{number}.log"
    env = {**os.environ, "TESTS": number, "TEST_KAFKA_VERSION": "4.1.1",
           "TEST_SCENARIO": scenario, "RDKAFKA_TEST_CONF": str(conf)}
    tests_dir = runner.parents[2] / "tests"  # the test-runner reads its files from there
    with open(log, "wb") as out:
        try:
            flags = ["-Q", "-L", "-E"] if quick else ["-L", "-E"]
            done = subprocess.run(["nice", str(runner), *flags], cwd=tests_dir, env=env,
                                  stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
        except subprocess.TimeoutExpired:
            return "TIMEOUT", f"after {timeout:.0f} s"
    text = ANSI.sub("", log.read_text(errors="replace"))
    states = [(m[2], m[3].strip()) for line in text.splitlines()
              if (m := ROW.match(line)) and m[1].startswith(number)]
    if not states:
        return ("NOTFOUND" if done.returncode == 0 else "FAILED"), f"exit status {done.returncode}"
    for wanted in ("FAILED", "RUNNING", "PASSED", "SKIPPED"):
        for state, reason in states:
            if state == wanted:
                return state, reason
    return states[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default="akfak3,kafka3")
    parser.add_argument("--tests", default=DEFAULT_TESTS.replace(" ", ","))
    parser.add_argument("--cache", type=Path, default=CACHE,
                        help="default: $AKFAK_LIBRDKAFKA_CACHE or ~/.cache/akfak-librdkafka")
    parser.add_argument("--source", default=SOURCE)
    parser.add_argument("--commit", default=COMMIT)
    parser.add_argument("--timeout", type=float, default=600, help="seconds per test")
    parser.add_argument("--full", action="store_true",
                        help="not in quick mode (-Q skips the subtests not marked quick)")
    parser.add_argument("--serve", metavar="TARGET", choices=sorted(TARGETS),
                        help="only start TARGET, print its bootstrap servers and keep it "
                             "running until interrupted (for test-runner by hand)")
    args = parser.parse_args()
    if args.serve:
        # a background job ignores SIGINT: SIGTERM stops the target as cleanly
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        base = Path(tempfile.mkdtemp(prefix=f"librdkafka-{args.serve}-"))
        with TARGETS[args.serve](base, {}) as bootstrap:
            print(f"{args.serve}: bootstrap.servers={bootstrap} (logs in {base})", flush=True)
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                return 0
    tests = [t.strip() for t in args.tests.split(",") if t.strip()]
    targets = [t.strip() for t in args.targets.split(",")]
    runner = build(args.cache, args.source, args.commit)
    logs = Path(tempfile.mkdtemp(prefix="librdkafka-tests-"))
    print(f"logs in {logs}", flush=True)
    results: dict[str, dict[str, tuple[str, str]]] = {}
    scenarios = sorted({SCENARIOS.get(t, "default") for t in tests}, key=lambda s: s != "default")
    for target in targets:
        for scenario in scenarios:
            base = logs / (target if scenario == "default" else f"{target}-{scenario}")
            base.mkdir()
            with TARGETS[target](base, SCENARIO_PROPERTIES[scenario]) as bootstrap:
                print(f"{target} ({scenario}): {bootstrap}", flush=True)
                for number in tests:
                    if SCENARIOS.get(number, "default") != scenario:
                        continue
                    started = time.monotonic()
                    results.setdefault(number, {})[target] = run_test(
                        runner, number, bootstrap, base, scenario, args.timeout,
                        quick=not args.full)
                    state, reason = results[number][target]
                    print(f"  {number} {state} ({time.monotonic() - started:.0f} s) {reason}",
                          flush=True)
    print("\n| test | " + " | ".join(targets) + " |")
    print("| --- |" + " --- |" * len(targets))
    for number in tests:
        print(f"| {number} | " + " | ".join(results[number][t][0] for t in targets) + " |")
    for number in tests:
        for target in targets:
            state, reason = results[number][target]
            if state != "PASSED" and reason:
                print(f"- {number} on {target}: {state}, {reason}")
    regressions = [n for n in tests for t in targets if t.startswith("akfak")
                   and "kafka3" in results[n] and results[n]["kafka3"][0] == "PASSED"
                   and results[n][t][0] != "PASSED"]
    return 1 if regressions else 0


if __name__ == "__main__":
    sys.exit(main())
