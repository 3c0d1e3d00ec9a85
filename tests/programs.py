"""Running the Go (tests/go) and JavaScript (tests/js) client programs from pytest.

`go_program()` builds tests/go into tests/go/bin once per session, and only when its sources
changed since the last build (a hash in a stamp file); the modules stay in Go's module cache.
`js_program()` runs `npm ci` in tests/js once, when package-lock.json changed since the last
install; the `node` package brings the Node.js 22 the programs run on. Without go (or npm) the
tests that need them skip, except under CI (CI=true), where they fail; a build or install that
fails only because the registry cannot be reached skips too.

Both kinds of program print JSON lines (`Run`, as the Java programs do); `Member` runs one
group member in the background and collects its lines as they come.
"""

from __future__ import annotations

import base64
import fcntl
import functools
import hashlib
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.jvm import JavaRun as Run
from tests.jvm import in_ci, parse_lines

TESTS = Path(__file__).resolve().parent
GO_DIR = TESTS / "go"
JS_DIR = TESTS / "js"
GO_BINARY = GO_DIR / "bin" / "akfak-clients"
NODE = JS_DIR / "node_modules" / "node" / "bin" / "node"
# a first build or install downloads ~20 MB (Go modules) or ~60 MB (npm, with Node.js itself)
SETUP_TIMEOUT = 300.0
UNREACHABLE = re.compile(
    r"dial tcp|i/o timeout|no such host|connection refused|network is unreachable|TLS handshake timeout"
    r"|ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ECONNRESET|ETIMEDOUT|ENETUNREACH|network request .* failed",
    re.IGNORECASE,
)

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]


class Unreachable(Exception):
    """The registry could not be reached: the network, not the programs, is at fault."""


def tree_hash(files: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _require(tool: str, what: str) -> None:
    if shutil.which(tool) is not None:
        return
    if in_ci():
        pytest.fail(f"CI=true but {tool} is not on PATH: the {what} tests cannot run", pytrace=False)
    pytest.skip(f"{tool} not on PATH (install it to run the {what} tests)")


def _setup(directory: Path, stamp: Path, want: str, command: list[str],
           env: dict[str, str] | None = None) -> None:
    """Runs `command` in `directory` unless `stamp` holds `want`; then writes it. Safe when two
    pytest processes call it at once (a file lock)."""
    stamp.parent.mkdir(parents=True, exist_ok=True)
    with open(stamp.parent / ".setup.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists() and stamp.read_text() == want:
            return
        stamp.unlink(missing_ok=True)
        try:
            done = subprocess.run(command, cwd=directory, stdin=subprocess.DEVNULL, capture_output=True,
                                  text=True, timeout=SETUP_TIMEOUT, env={**os.environ, **(env or {})})
        except subprocess.TimeoutExpired as e:
            raise Unreachable(f"`{' '.join(command)}` ran over {SETUP_TIMEOUT:.0f}s "
                              "(a stalled network?)") from e
        output = done.stdout + done.stderr
        if done.returncode != 0:
            match = UNREACHABLE.search(output)
            if match:
                raise Unreachable(f"`{' '.join(command)}` could not download: {match.group(0)}")
            pytest.fail(f"`{' '.join(command)}` in {directory} failed ({done.returncode}):\n{output[-6000:]}",
                        pytrace=False)
        stamp.write_text(want)


@functools.cache
def _built(kind: str) -> BaseException | None:
    """Builds or installs once per session; the skip or failure it ended in is kept."""
    try:
        if kind == "go":
            sources = [GO_DIR / "go.mod", GO_DIR / "go.sum", *GO_DIR.glob("*.go")]
            _setup(GO_DIR, GO_BINARY.parent / ".build-stamp", tree_hash(sources),
                   ["go", "build", "-o", str(GO_BINARY), "."], env={"GOFLAGS": "-mod=readonly"})
        else:
            lock = JS_DIR / "package-lock.json"
            # --ignore-scripts=false: the node package's preinstall fetches the Node.js binary package
            _setup(JS_DIR, JS_DIR / "node_modules" / ".akfak-install-stamp",
                   tree_hash([lock, JS_DIR / "package.json"]),
                   ["npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts=false"])
    except (Unreachable, pytest.fail.Exception) as e:
        return e
    return None


def _ready(kind: str) -> None:
    error = _built(kind)
    if isinstance(error, Unreachable):
        pytest.skip(str(error))
    if error is not None:
        pytest.fail(str(error), pytrace=False)


def go_program() -> list[str]:
    """The command line of the Go programs, built first if needed."""
    _require("go", "Go client")
    _ready("go")
    return [str(GO_BINARY)]


def js_program(script: str) -> list[str]:
    """The command line of tests/js/<script>.mjs, npm ci first if needed."""
    _require("npm", "JavaScript client")
    _ready("js")
    return [str(NODE), str(JS_DIR / f"{script}.mjs")]


def run(command: list[str], *args: str, timeout: float = 60.0) -> Run:
    """Runs a program with key=value `args`; its JSON lines."""
    try:
        done = subprocess.run([*command, *args], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        partial = Run(-9, parse_lines(out), err)
        pytest.fail(f"{' '.join(command + list(args))} ran over {timeout}s: {partial.describe()}",
                    pytrace=False)
    return Run(done.returncode, parse_lines(done.stdout), done.stderr)


class Member:
    """A group member program running in the background; its lines are collected as printed.
    `stop()` sends SIGTERM, or with `stdin=True` closes its stdin (how the Java programs stop)."""

    def __init__(self, command: list[str], *args: str, stdin: bool = False) -> None:
        self.command = [*command, *args]
        self.proc = subprocess.Popen(self.command, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.started = time.monotonic()
        self.lines: list[dict[str, Any]] = []
        self.stderr: list[str] = []
        self._readers = [threading.Thread(target=self._read, daemon=True),
                         threading.Thread(target=self._read_stderr, daemon=True)]
        for reader in self._readers:
            reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for text in self.proc.stdout:
            for line in parse_lines(text):
                line["at"] = round(time.monotonic() - self.started, 3)  # when it came, for failures
                self.lines.append(line)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        self.stderr.extend(self.proc.stderr)

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [line for line in list(self.lines) if line.get("kind") == kind]

    def stop(self, timeout: float = 30.0) -> Run:
        """SIGTERM or stdin closed (the member commits and leaves its group), then its whole
        output."""
        if self.proc.poll() is None:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            else:
                self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for reader in self._readers:
            reader.join(5)
        return Run(self.proc.returncode, list(self.lines), "".join(self.stderr))

    def describe(self) -> str:
        return Run(self.proc.poll() or 0, list(self.lines), "".join(self.stderr)).describe()


@contextmanager
def members(*started: Member) -> Iterator[list[Member]]:
    """Stops every member still running at the end (a failed test leaves none behind)."""
    running = list(started)
    try:
        yield running
    finally:
        for member in running:
            if member.proc.poll() is None:
                member.proc.kill()
                member.proc.wait()


def wait_for(condition: Callable[[], Any], timeout: float, what: str,
             describe: Callable[[], str] = str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"no {what} after {timeout}s: {describe()}", pytrace=False)


# -- the records every program writes (tests/go/main.go Key/Value/Header, tests/js/common.mjs)

def key(i: int) -> str:
    return f"key-{i}"


def value(i: int) -> bytes:
    return (f"record-{i} " * 8).encode() + bytes((i + j * 5) % 256 for j in range(64))


def record_value(line: dict[str, Any]) -> bytes:
    return base64.b64decode(line["value"])


def check_records(run: Run, topic: str, indexes: range, partitions: int = 1) -> None:
    """The run consumed exactly records `indexes` of `topic` (and maybe records of other topics),
    byte for byte, record i in partition i % partitions, the offsets of each partition contiguous
    from indexes.start // partitions."""
    got = [line for line in run.of_kind("record") if line["topic"] == topic]
    by_key = {line["key"]: line for line in got}
    assert len(got) == len(indexes) == len(by_key), \
        f"{len(got)} records, {len(by_key)} keys: {run.describe()}"
    for i in indexes:
        line = by_key.get(key(i))
        assert line is not None, f"{topic}: record {i} missing"
        assert (line["topic"], line["partition"]) == (topic, i % partitions), line
        assert record_value(line) == value(i), f"{topic}: record {i} differs"
        assert line["headers"] == {"i": str(i)}, line
    for p in range(partitions):
        offsets = [line["offset"] for line in got if line["partition"] == p]
        first = indexes.start // partitions
        assert sorted(offsets) == list(range(first, first + len(offsets))), f"{topic}/{p}: offsets {offsets}"

