"""Running the Java client programs of tests/java from pytest.

`build()` compiles tests/java (`mvn compile`, which also writes the classpath) once per session and
only when its sources changed since the last build (a hash of pom.xml and src/ in a stamp file
under target/); the dependencies stay in the local Maven repository (~/.m2). `run_java(main, ...)`
then runs `akfak.tests.<main>` and parses the JSON lines it prints.

JVM starts are much of the suite's time, so every JVM maps the classes an earlier run of the
same classpath loaded (a dynamic AppCDS archive, `class_data_sharing`): the first one-shot run
of a classpath writes the archive at its exit, under ~/.cache/akfak-cds (AKFAK_CDS_DIR), and
the later ones start in about half the time.

Without java or mvn on PATH the tests that need them skip, except under CI (CI=true), whose
machine has both, where they fail. A Maven build that fails only because Maven Central cannot be
reached skips too; any other build failure fails.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import pytest

JAVA_DIR = Path(__file__).resolve().parent / "java"
# a first build downloads ~115 MB of artifacts (seconds on a good link); later ones only compile.
# Under the 600 s pytest timeout of tests/test_java_clients.py, which counts fixture setup.
BUILD_TIMEOUT = 420.0
JVM_FLAGS = ["-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xmx512m", "-Xss1m"]
# what Maven says when it cannot reach a repository at all (as opposed to a missing artifact or
# a compile error, which must fail the tests)
NETWORK_ERROR = re.compile(
    r"UnknownHostException|Unknown host|Connection refused|Connect(ion)? timed out|connect timed out"
    r"|Network is unreachable|No route to host|Temporary failure in name resolution"
    r"|Could not transfer (artifact|metadata)|transfer failed for https?://|Remote host terminated",
    re.IGNORECASE,
)


class MavenUnreachable(Exception):
    """Maven could not download what the build needs: the network, not the build, is at fault."""


class JavaRun(NamedTuple):
    """What a Java program did: its exit status, its stdout lines as JSON, and its stderr."""

    returncode: int
    lines: list[dict[str, Any]]
    stderr: str

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line.get("kind") == kind]

    def last(self, kind: str) -> dict[str, Any]:
        found = self.of_kind(kind)
        assert found, f"no {kind!r} line in the output:\n{self.describe()}"
        return found[-1]

    def describe(self) -> str:
        tail = "\n".join(self.stderr.splitlines()[-60:])
        kinds = [line.get("kind") for line in self.lines]
        summary = [line for line in self.lines if line.get("kind") != "record"][-10:]
        return (f"exit status {self.returncode}; {len(kinds)} lines, last non-record ones: {summary}\n"
                f"stderr (last 60 lines):\n{tail}")

    def check(self) -> JavaRun:
        """Asserts that the program exited 0, showing its output otherwise; returns self."""
        assert self.returncode == 0, self.describe()
        return self


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


def java_available() -> bool:
    return shutil.which("java") is not None and shutil.which("mvn") is not None


def require_jvm() -> None:
    """Skips the calling test without java and mvn, or fails it under CI, which has both."""
    if java_available():
        return
    missing = " and ".join(tool for tool in ("java", "mvn") if shutil.which(tool) is None)
    if in_ci():
        pytest.fail(f"CI=true but {missing} not on PATH: the Java client tests cannot run", pytrace=False)
    pytest.skip(f"{missing} not on PATH (install OpenJDK 17 and Maven to run the Java client tests)")


def sources_hash(project: Path) -> str:
    """A hash of a Maven project's pom.xml and every file under src/."""
    digest = hashlib.sha256()
    files = [project / "pom.xml", *sorted(p for p in (project / "src").rglob("*") if p.is_file())]
    for path in files:
        if path.exists():
            digest.update(str(path.relative_to(project)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def maven_classpath(project: Path, goals: list[str]) -> list[str]:
    """Runs `mvn goals` in `project` unless its stamp says its sources are built already; returns
    the dependency classpath it wrote to target/classpath.txt. Safe when pytest-xdist workers
    call it at once (a file lock)."""
    target = project / "target"
    target.mkdir(exist_ok=True)
    stamp = target / ".akfak-build-stamp"
    classpath_file = target / "classpath.txt"
    with open(target / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        want = sources_hash(project)
        if stamp.exists() and stamp.read_text() == want and classpath_file.exists():
            jars = classpath_file.read_text().strip().split(os.pathsep)
            if all(Path(jar).exists() for jar in jars):
                return jars
        stamp.unlink(missing_ok=True)
        command = ["mvn", "-q", "-B", "-Dstyle.color=never", *goals]
        try:
            done = subprocess.run(command, cwd=project, stdin=subprocess.DEVNULL, capture_output=True,
                                  text=True, timeout=BUILD_TIMEOUT)
        except subprocess.TimeoutExpired as e:
            raise MavenUnreachable(f"`{' '.join(command)}` in {project} ran over {BUILD_TIMEOUT:.0f}s, "
                                   "downloading (a slow or stalled network?)") from e
        output = re.sub(r"\x1b\[[0-9;]*m", "", done.stdout + done.stderr)  # Maven's colours
        if done.returncode != 0:
            match = NETWORK_ERROR.search(output)
            if match:
                line = next((ln for ln in output.splitlines() if match.group(0) in ln), match.group(0))
                raise MavenUnreachable(f"Maven could not download the build's artifacts: {line.strip()}")
            pytest.fail(f"`{' '.join(command)}` in {project} failed ({done.returncode}):\n{output[-8000:]}",
                        pytrace=False)
        stamp.write_text(want)
        return classpath_file.read_text().strip().split(os.pathsep)


@functools.cache
def _build() -> tuple[str, BaseException | None]:
    """The classpath, or the skip or failure the build ended in (kept, so that a build that
    failed is not run again for each test)."""
    try:
        jars = maven_classpath(JAVA_DIR, ["compile"])
    except (MavenUnreachable, pytest.fail.Exception) as e:
        return "", e
    return os.pathsep.join([str(JAVA_DIR / "target" / "classes"), *jars]), None


def build() -> str:
    """The classpath of the Java programs, building them first if needed (once per session).
    Skips (or under CI fails) the calling test when they cannot be built here."""
    require_jvm()
    classpath, error = _build()
    if isinstance(error, MavenUnreachable):
        pytest.skip(str(error))
    if error is not None:
        pytest.fail(str(error), pytrace=False)
    return classpath


def java_command(classpath: str, main_class: str, *args: str, flags: list[str] | None = None) -> list[str]:
    log_level = os.environ.get("AKFAK_JAVA_LOG")
    logging = [f"-Dorg.slf4j.simpleLogger.defaultLogLevel={log_level}"] if log_level else []
    archive = _cds_archive(classpath)
    sharing = [f"-XX:SharedArchiveFile={archive}"] if archive.exists() else []
    return ["java", *JVM_FLAGS, *CDS_QUIET, *sharing, *logging, *(flags or []),
            "-cp", classpath, main_class, *args]


#: CDS's warnings (an archive that no longer matches is simply not used) would go to stdout.
CDS_QUIET = ["-Xlog:cds*=off"]


def _cds_archive(classpath: str) -> Path:
    """Where the archive of `classpath` is: named after the java binary and every entry's
    path, size and mtime, which the JVM checks too (a rebuilt jar gets a new archive)."""
    key = hashlib.sha256(os.path.realpath(shutil.which("java") or "java").encode())
    for entry in classpath.split(os.pathsep):
        try:
            stat = os.stat(entry)
        except OSError:
            continue
        key.update(f"{entry}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    directory = Path(os.environ.get("AKFAK_CDS_DIR") or Path.home() / ".cache" / "akfak-cds")
    return directory / f"{key.hexdigest()[:24]}.jsa"


@contextmanager
def class_data_sharing(classpath: str) -> Iterator[list[str]]:
    """Extra JVM flags for a one-shot run of `classpath`: while it has no archive, the first
    such run (elected by a lock file) writes one at its exit; the others run as they are."""
    archive = _cds_archive(classpath)
    if archive.exists() or any(os.path.isdir(e) and os.listdir(e)
                               for e in classpath.split(os.pathsep)):
        yield []  # (CDS refuses a classpath with a non-empty directory: tests/java's classes)
        return
    lock = archive.with_suffix(".lock")
    try:
        archive.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except OSError:
        yield []  # another run is writing it
        return
    partial = archive.with_suffix(f".{os.getpid()}.partial")
    try:
        yield [f"-XX:ArchiveClassesAtExit={partial}"]
        if partial.exists():
            partial.rename(archive)  # complete: the JVM has exited
    finally:
        partial.unlink(missing_ok=True)
        lock.unlink(missing_ok=True)


def run_java(main_class: str, *args: str, timeout: float = 120.0) -> JavaRun:
    """Runs akfak.tests.<main_class> (tests/java) with `args`; its stdout lines parsed as JSON
    (a line that is not JSON is kept as {"kind": "text", "text": line})."""
    name = main_class if "." in main_class else f"akfak.tests.{main_class}"
    classpath = build()
    try:
        with class_data_sharing(classpath) as sharing:
            done = subprocess.run(java_command(classpath, name, *args, flags=sharing),
                                  stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        run = JavaRun(-9, parse_lines(out), err)
        pytest.fail(f"{main_class} {' '.join(args)} ran over {timeout}s: {run.describe()}", pytrace=False)
    return JavaRun(done.returncode, parse_lines(done.stdout), done.stderr)


def parse_lines(stdout: str) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    for text in stdout.splitlines():
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        lines.append(value if isinstance(value, dict) else {"kind": "text", "text": text})
    return lines


class JavaProgram:
    """A tests/java program running beside the test (`main_class` with `args`), its JSON
    lines collected as they come; closing its stdin asks it to finish (a GroupMember leaves
    its group)."""

    def __init__(self, main_class: str, *args: str) -> None:
        self.lines: list[dict[str, Any]] = []
        self.process = subprocess.Popen(
            java_command(build(), main_class, *args), stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.extend(parse_lines(line))

    def leave(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        assert self.process.wait(60) == 0, self.lines[-5:]
        self.reader.join(10)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
