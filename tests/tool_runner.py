"""Kafka's admin tools run in long-lived JVMs (tests/java/kafka-peer/ToolRunner.java), for
tests/kafka_tools.py: most of a one-shot tool run is the JVM's start and a cold JIT, and the tool
tests run a few hundred.

`run(main_class, args, input, timeout)` takes an idle runner of this process (or starts one;
`on_both` uses two at once), sends it the run and waits for the answer. The runners are stopped
when the process exits. Only the tools in IN_PROCESS run this way: they end through Kafka's
`Exit` and print through System.out at the time they print. Everything else, and every tool
with AKFAK_TOOLS_FORK=1, runs in a JVM of its own (kafka_tools.run_tool). A runner that dies
in a run (a tool called System.exit) makes `run` answer None: the caller runs the tool in a JVM
of its own instead.
"""

from __future__ import annotations

import atexit
import base64
import os
import queue
import subprocess
import threading
from pathlib import Path

from tests import jvm

RUNNER = Path(__file__).resolve().parent / "java" / "kafka-peer" / "ToolRunner.java"
IN_PROCESS = frozenset({
    "kafka.admin.ConfigCommand",
    "org.apache.kafka.tools.AclCommand",
    "org.apache.kafka.tools.BrokerApiVersionsCommand",
    "org.apache.kafka.tools.ClientMetricsCommand",
    "org.apache.kafka.tools.DeleteRecordsCommand",
    "org.apache.kafka.tools.FeatureCommand",
    "org.apache.kafka.tools.GetOffsetShell",
    "org.apache.kafka.tools.LeaderElectionCommand",
    "org.apache.kafka.tools.LogDirsCommand",
    "org.apache.kafka.tools.MetadataQuorumCommand",
    "org.apache.kafka.tools.TopicCommand",
    "org.apache.kafka.tools.TransactionsCommand",
    "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
    "org.apache.kafka.tools.consumer.group.ShareGroupCommand",
    "org.apache.kafka.tools.reassign.ReassignPartitionsCommand",
})


class RunnerTimeout(Exception):
    """The tool did not answer in time (its runner is stopped)."""


class _Runner:
    def __init__(self, classpath: str, flags: list[str], log: Path) -> None:
        self.classpath = classpath
        with open(log, "ab") as err:
            self.proc = subprocess.Popen(
                jvm.java_command(classpath, str(RUNNER), flags=flags),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
        self.answers: queue.Queue[bytes] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.answers.put(line)
        self.answers.put(b"")  # the runner is gone

    def run(self, main_class: str, args: tuple[str, ...], input: str | None,
            timeout: float) -> tuple[int, str, str] | None:
        fields = [main_class.encode(), (input or "").encode(), *(a.encode() for a in args)]
        request = b"\t".join(base64.b64encode(f) for f in fields) + b"\n"
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(request)
            self.proc.stdin.flush()
            answer = self.answers.get(timeout=timeout)
        except (BrokenPipeError, OSError):
            return None
        except queue.Empty:
            self.stop()
            raise RunnerTimeout from None
        if not answer:
            return None
        code, out, err = answer.rstrip(b"\n").split(b"\t")
        return (int(code), base64.b64decode(out).decode(errors="replace"),
                base64.b64decode(err).decode(errors="replace"))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


_idle: list[_Runner] = []
_all: list[_Runner] = []
_lock = threading.Lock()


def enabled(main_class: str) -> bool:
    return main_class in IN_PROCESS and os.environ.get("AKFAK_TOOLS_FORK") != "1"


def run(classpath: str, flags: list[str], log: Path, main_class: str, args: tuple[str, ...],
        input: str | None, timeout: float) -> tuple[int, str, str] | None:
    """(exit code, stdout, stderr) of the tool, or None when its runner died in the run."""
    with _lock:
        runner = next((r for r in _idle if r.classpath == classpath), None)
        if runner is not None:
            _idle.remove(runner)
    if runner is None:
        runner = _Runner(classpath, flags, log)
        with _lock:
            _all.append(runner)
    result = runner.run(main_class, args, input, timeout)
    if result is None:
        runner.stop()
    else:
        with _lock:
            _idle.append(runner)
    return result


@atexit.register
def _stop_all() -> None:
    for runner in _all:
        runner.stop()
