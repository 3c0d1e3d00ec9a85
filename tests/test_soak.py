"""The SIGKILL soak (benchmarks/soak.py) in a short run: a few kills of a broker under load
(idempotent and plain producers, a committing consumer group, a compacted topic being
cleaned, retention on another), then nothing acknowledged lost, no duplicate from the
idempotent producers, committed offsets sane.  The long run's figures are in the README."""

from __future__ import annotations

import subprocess
import sys

from tests.brokers import ROOT


def test_soak_short() -> None:
    run = subprocess.run([sys.executable, "benchmarks/soak.py", "--cycles", "2",
                          "--min-seconds", "1", "--max-seconds", "2"],
                         cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    rows = [line.split(" | ") for line in run.stdout.splitlines()
            if line.startswith("| soak-")]
    assert [r[0].removeprefix("| ") for r in rows] == [
        "soak-idem", "soak-plain", "soak-compact", "soak-retention"], run.stdout
    for row in rows:
        assert int(row[1]) > 0 and row[2] == "0", run.stdout  # acknowledged, none lost
    assert rows[0][3] == "0" and rows[2][3] == "0", run.stdout  # idempotent: no duplicate
    assert "offsets checks: ok" in run.stdout
    assert run.stdout.rstrip().endswith("OK")
