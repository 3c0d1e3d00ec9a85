"""Starting brokers for tests: in this process (pytest-twisted) or as a subprocess."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from akfak.service import ListenerService, makeService
from akfak.tap import build_config

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"broker exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listening on {port} after {timeout}s")


@dataclass
class InProcessBroker:
    """A broker service running in the test's reactor."""

    service: Any
    port: int
    data_dir: Path

    @property
    def broker(self) -> Any:
        return self.service.broker

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"


def start_in_process(data_dir: Path, *, storage: str = "memory", overrides: list[str] | None = None,
                     config: str | None = None) -> InProcessBroker:
    cfg = build_config(config=config, data_dir=str(data_dir), listen=["tcp:0:interface=127.0.0.1"],
                       overrides=overrides, storage=storage)
    service = makeService(cfg)
    service.startService()
    listener = next(s for s in service if isinstance(s, ListenerService))
    return InProcessBroker(service, listener.port.getHost().port, data_dir)


@dataclass
class BrokerProcess:
    """A broker in a child process (`python -m akfak`, `twistd ...`)."""

    proc: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    log_path: Path
    args: list[str] = field(default_factory=list)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def kill(self) -> None:
        """kill -9: no chance to flush or close anything."""
        self.stop(signal.SIGKILL)


def start_process(
    data_dir: Path,
    *extra: str,
    port: int | None = None,
    command: list[str] | None = None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    log_path: Path | None = None,
    wait: bool = True,
    start_timeout: float = 20.0,
    preexec_fn: Any = None,
) -> BrokerProcess:
    """Start a broker subprocess on a free port (or `port`) and wait until it listens
    (`preexec_fn` runs in the child first, e.g. to set resource limits)."""
    port = port or free_port()
    if command is None:
        command = [sys.executable, "-m", "akfak", "--listen", f"tcp:{port}:interface=127.0.0.1",
                   "--data-dir", str(data_dir), "--http", "none", *extra]
    log_path = log_path or data_dir.parent / f"broker-{port}.log"
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=cwd or ROOT,
                                env={**os.environ, **(env or {})}, preexec_fn=preexec_fn)
    broker = BrokerProcess(proc, port, data_dir, log_path, command)
    if wait:
        try:
            wait_for_port(port, proc, start_timeout)
        except Exception:
            broker.stop(signal.SIGKILL)
            raise RuntimeError(f"broker did not start:\n{broker.log()}") from None
    return broker
