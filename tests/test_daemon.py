"""The broker as users start it: twistd, the .tac file, python -m akfak, server.properties."""

from __future__ import annotations

import asyncio
import os
import platform
import signal
import struct
import sys
import time
from pathlib import Path
from typing import Any

from kio.schema.errors import ErrorCode

from tests.brokers import ROOT, free_port, wait_for_port
from tests.test_framing import api_versions_frame, read_api_versions
from tests.wire import WireClient, decode_response

TWISTD = str(Path(sys.executable).with_name("twistd"))


# twistd shuts down cleanly on SIGTERM, then re-raises it so the exit status tells why.
CLEAN_EXIT = (0, -signal.SIGTERM)
#: what a broker's own process logs once it set glibc's allocator (akfak.allocator)
KEPT = "Memory allocator: freed memory kept for reuse"
GLIBC = platform.libc_ver()[0] == "glibc"


def answers_api_versions(port: int) -> None:
    with WireClient(port) as client:
        client.send(api_versions_frame(42))
        correlation_id, response = read_api_versions(client)
        assert correlation_id == 42 and response.error_code == ErrorCode.none


def test_twistd_nodaemon(broker_process: Any, tmp_path: Path) -> None:
    port = free_port()
    proc = broker_process(
        port=port,
        command=[TWISTD, "-n", "--pidfile=", "akfak", "--listen", f"tcp:{port}:interface=127.0.0.1",
                 "--data-dir", str(tmp_path / "data")],
        cwd=tmp_path,
    )
    answers_api_versions(port)
    assert proc.stop(signal.SIGTERM) in CLEAN_EXIT
    log = proc.log()
    assert "listening on" in log and "Server Shut Down" in log
    assert (KEPT in log) == GLIBC  # the broker's own process: akfak.allocator


def test_twistd_tac(broker_process: Any, tmp_path: Path) -> None:
    port = free_port()
    proc = broker_process(
        port=port,
        command=[TWISTD, "-ny", str(ROOT / "akfak.tac"), "--pidfile="],
        cwd=tmp_path,
        env={"AKFAK_LISTEN": f"tcp:{port}:interface=127.0.0.1", "AKFAK_DATA_DIR": str(tmp_path / "d")},
    )
    answers_api_versions(port)
    assert proc.stop(signal.SIGTERM) in CLEAN_EXIT
    assert "Server Shut Down" in proc.log()
    assert (KEPT in proc.log()) == GLIBC


def test_the_environment_keeps_its_allocator_settings(broker_process: Any, tmp_path: Path) -> None:
    port = free_port()
    proc = broker_process(
        port=port,
        command=[sys.executable, "-m", "akfak", "--listen", f"tcp:{port}:interface=127.0.0.1",
                 "--data-dir", str(tmp_path / "data"), "--http", "none"],
        cwd=tmp_path, env={"MALLOC_TRIM_THRESHOLD_": str(64 << 20)})
    answers_api_versions(port)
    assert proc.stop(signal.SIGTERM) in CLEAN_EXIT
    assert KEPT not in proc.log()


def test_twistd_daemonizes_with_pid_and_log_files(tmp_path: Path) -> None:
    import subprocess

    port = free_port()
    pidfile, logfile = tmp_path / "akfak.pid", tmp_path / "akfak.log"
    subprocess.run(
        [TWISTD, f"--pidfile={pidfile}", f"--logfile={logfile}", "akfak",
         "--listen", f"tcp:{port}:interface=127.0.0.1", "--data-dir", str(tmp_path / "data")],
        cwd=tmp_path, check=True, timeout=30,
    )
    wait_for_port(port)
    pid = int(pidfile.read_text())
    try:
        answers_api_versions(port)
    finally:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pidfile.exists(), "twistd did not remove its pid file on SIGTERM"
    assert "listening on" in logfile.read_text()


def test_help_lists_options(tmp_path: Path) -> None:
    import subprocess

    out = subprocess.run([TWISTD, "-n", "akfak", "--help"], capture_output=True, text=True,
                         cwd=tmp_path, timeout=30)
    assert out.returncode == 0
    for option in ("--listen", "--data-dir", "--config", "--override", "--storage"):
        assert option in out.stdout


def test_server_properties(broker_process: Any, tmp_path: Path) -> None:
    port = free_port()
    props = tmp_path / "server.properties"
    props.write_text(
        "# written for Apache Kafka\n"
        "process.roles=broker,controller\n"
        "node.id=7\n"
        "controller.quorum.voters=7@localhost:9093\n"
        f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{free_port()}\n"
        "controller.listener.names=CONTROLLER\n"
        f"advertised.listeners=PLAINTEXT://localhost:{port}\n"
        f"log.dirs={tmp_path / 'kraft-logs'}\n"
        "num.network.threads=3\n"
        "socket.request.max.bytes=2048\n"
    )
    proc = broker_process("--config", str(props), port=port,
                          command=[sys.executable, "-m", "akfak", "--config", str(props)])
    answers_api_versions(port)
    with WireClient(port) as client:  # socket.request.max.bytes from the file applies
        client.send(struct.pack(">i", 4096) + b"\x00" * 64)
        assert client.is_closed_by_peer()
    proc.stop()
    log = proc.log()
    assert "akfak node 7 listening on" in log
    assert "advertising localhost:" in log
    assert "Keeping but not using these properties: controller.quorum.voters, num.network.threads" in log


def test_your_program_sh_reads_server_properties(broker_process: Any, tmp_path: Path) -> None:
    port = free_port()
    props = tmp_path / "server.properties"
    props.write_text(f"listeners=PLAINTEXT://127.0.0.1:{port}\nlog.dirs={tmp_path / 'logs'}\n")
    proc = broker_process(port=port, command=[str(ROOT / "your_program.sh"), str(props)])
    answers_api_versions(port)
    assert proc.stop() in CLEAN_EXIT


def test_port_in_use_fails_to_start(tmp_path: Path) -> None:
    import socket
    import subprocess

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = subprocess.run(
            [sys.executable, "-m", "akfak", "--listen", f"tcp:{port}:interface=127.0.0.1",
             "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    assert "Address already in use" in out.stdout + out.stderr


def test_many_connections_pipelining(broker_process: Any) -> None:
    """200 concurrent connections, each pipelining 20 ApiVersions requests."""
    proc = broker_process()

    async def one(index: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", proc.port)
        ids = [index * 100 + i for i in range(20)]
        writer.write(b"".join(api_versions_frame(i, i % 5) for i in ids))
        await writer.drain()
        for i in ids:
            (size,) = struct.unpack(">i", await reader.readexactly(4))
            correlation_id, response = decode_response(18, i % 5, await reader.readexactly(size))
            assert correlation_id == i and response.error_code == ErrorCode.none
        writer.close()

    async def all_of_them() -> None:
        await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(200))), 60)

    asyncio.run(all_of_them())


def test_reload_restarts_on_source_change(broker_process: Any, tmp_path: Path) -> None:
    port = free_port()
    proc = broker_process(port=port, command=[
        sys.executable, "-m", "akfak", "--reload", "--listen", f"tcp:{port}:interface=127.0.0.1",
        "--data-dir", str(tmp_path / "data")])
    answers_api_versions(port)
    source = ROOT / "akfak" / "tap.py"
    stat = source.stat()
    try:
        # The worker tells hupper which files it imported a moment after starting: keep
        # touching (content unchanged) until the change is noticed, then let the new worker
        # start (touching on would restart it again before it listens on a loaded machine).
        deadline = time.monotonic() + 30
        bump = 0
        while "changed; reloading" not in proc.log() and time.monotonic() < deadline:
            bump += 1
            os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + bump * 1_000_000_000))
            time.sleep(0.5)
        assert "changed; reloading" in proc.log()
        while proc.log().count("listening on") < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.log().count("listening on") == 2
        wait_for_port(port)
        answers_api_versions(port)
    finally:
        os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    proc.stop()
    import socket

    with socket.socket() as s:  # the reloaded worker went with its monitor
        s.bind(("127.0.0.1", port))


def test_kafka_python_negotiates_versions(broker_process: Any) -> None:
    # kafka-python 3's KafkaNetClient is its drop-in replacement for KafkaClient.
    from kafka.net.compat import KafkaNetClient

    proc = broker_process()
    client = KafkaNetClient(bootstrap_servers=proc.bootstrap)
    try:
        version = client.check_version(timeout_ms=10_000)
    finally:
        client.close()
    # Inferred from our ApiVersions answer: the newest Kafka whose APIs we cover.
    assert version is not None and version >= (4, 0)
