"""The benchmark scripts still run: each once against akfak, in its quick mode (a few seconds).

Not a measurement: the figures are not checked, only that every benchmark ran to the end, which
includes the scripts' own checks (every record delivered, read_committed reading exactly the
committed records and read_uncommitted all of them).
"""

from __future__ import annotations

import subprocess
import sys

from tests.brokers import ROOT


def test_txn_bench_quick() -> None:
    run = subprocess.run([sys.executable, "benchmarks/txn_bench.py", "--only", "akfak", "--quick"],
                         cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stdout + run.stderr
    rows = [line for line in run.stdout.splitlines() if line.startswith("| ")]
    assert rows[0] == "| benchmark | akfak msg/s | akfak MiB/s |"
    names = [row.split(" | ")[0].removeprefix("| ") for row in rows[2:]]
    assert len(names) == 17, run.stdout
    for expected in ("produce 1024 B txn, 1000/txn", "fetch 100 B 1 in 10 txns aborted, read_committed",
                     "commits/s, 1 x 100 B record/txn"):
        assert expected in names


def test_group_join_bench_quick() -> None:
    run = subprocess.run([sys.executable, "benchmarks/group_join_bench.py", "--only", "akfak", "--rounds",
                          "1", "--heartbeat-ms", "500"], cwd=ROOT, capture_output=True, text=True,
                         timeout=180)
    assert run.returncode == 0, run.stdout + run.stderr
    rows = [line for line in run.stdout.splitlines() if line.startswith("| akfak |")]
    assert len(rows) == 1, run.stdout
