"""EmbeddedBroker: a real akfak broker on a free loopback port, started and stopped by a test.

Two ways to run one:

- blocking (`start()`, `stop()`, `create_topic()`, `with EmbeddedBroker() as b`, `running_broker()`):
  the broker gets a private reactor in a daemon thread of its own (see `_reactor`), so it serves
  clients whatever the calling thread does -- blocking clients, asyncio, or even the global
  Twisted reactor under pytest-twisted.  Callable from any thread except the broker's own.
- inside a running Twisted reactor (`start_broker()`, `start_deferred()`, `stop_deferred()`,
  `create_topic_deferred()`): the broker lives in that reactor (the global one by default) and
  every method returns a Deferred; call them from the reactor's thread only.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

from twisted.internet.defer import Deferred, gatherResults, maybeDeferred, succeed
from twisted.internet.interfaces import IListeningPort
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from akfak.service import ListenerService, makeService
from akfak.tap import build_config
from akfak.testing._reactor import ReactorThread
from akfak.testing.security import Certificates, Security
from akfak.web.service import HttpService

log = Logger()

#: Overrides that suit a single-node test broker, applied before the caller's own.
#: Kafka's 3 s initial rebalance delay would stall every consumer group test; a single node
#: cannot hold 3 replicas; one __consumer_offsets partition keeps an on-disk broker quick to start.
TEST_DEFAULTS: Mapping[str, str] = {
    "group.initial.rebalance.delay.ms": "0",
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "1",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "transaction.state.log.num.partitions": "1",
    # an abandoned transaction holds read_committed consumers back for a second, not a minute
    "transaction.abort.timed.out.transaction.cleanup.interval.ms": "1000",
    # test suites written for three brokers create topics with replication factor 3
    "akfak.accept.any.replication.factor": "true",
}

#: Seconds a blocking call waits for the broker's thread before raising TimeoutError.
DEFAULT_TIMEOUT = 60.0

Overrides = Mapping[str, object] | Iterable[str]

_live_lock = threading.Lock()
#: Brokers started with the blocking API and not yet stopped (stopped at interpreter exit).
_live: set[EmbeddedBroker] = set()
_exit_hook_registered = False


def _property_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _override_list(overrides: Overrides | None, first: Mapping[str, str] | None = None) -> list[str]:
    merged = dict(TEST_DEFAULTS)
    merged.update(first or {})
    if isinstance(overrides, Mapping):
        merged.update((str(k), _property_value(v)) for k, v in overrides.items())
    elif overrides is not None:
        if isinstance(overrides, str):
            raise TypeError("overrides must be a mapping or a list of 'key=value' strings, not a str")
        for item in overrides:
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"override {item!r} is not key=value")
            merged[key.strip()] = value.strip()
    return [f"{k}={v}" for k, v in merged.items()]


class EmbeddedBroker:
    """An akfak broker for tests, listening on a free port of `host` (127.0.0.1).

    `storage` is "memory" (default: nothing written, fastest) or "disk" (Kafka's on-disk
    format).  `data_dir` is the log directory; when not given, a fresh temporary directory
    is made at start and removed at stop (for "memory" too, so the broker never touches a
    shared default such as /tmp/kafka-logs).  `overrides` are broker properties
    (`{"log.segment.bytes": 1024}` or `["log.segment.bytes=1024"]`) applied over
    `TEST_DEFAULTS` and over `config_file` (a server.properties), if given.

    `security` (akfak.testing.security.Security) gives the broker listeners of other security
    protocols (SSL, mutual TLS, SASL...) with generated certificates (`certificates`) and SASL
    users, and `client_config()` the settings a client needs to connect to one of them.

    `http=True` serves /metrics and the web console on a free port too, at `http_url`.
    """

    def __init__(
        self,
        *,
        storage: str = "memory",
        data_dir: str | os.PathLike[str] | None = None,
        overrides: Overrides | None = None,
        config_file: str | os.PathLike[str] | None = None,
        host: str = "127.0.0.1",
        timeout: float = DEFAULT_TIMEOUT,
        security: Security | None = None,
        http: bool = False,
    ) -> None:
        if storage not in ("memory", "disk"):
            raise ValueError(f"storage must be 'memory' or 'disk', not {storage!r}")
        self.storage = storage
        self.host = host
        self.timeout = timeout
        self.security = security
        self.http = http
        #: http://127.0.0.1:PORT/ of /metrics and the console with http=True, once started
        self.http_url: str | None = None
        self._user_overrides = overrides
        self._overrides = _override_list(overrides)
        #: the TLS certificates made for a secured broker (None without TLS listeners)
        self.certificates: Certificates | None = None
        self._security_dir: Path | None = None
        #: listener name -> the port it listens on; set once listening, kept after stop
        self.ports: dict[str, int] = {}
        self._config_file = os.fspath(config_file) if config_file is not None else None
        self._given_dir = Path(data_dir) if data_dir is not None else None
        #: the log directory (made at start when not given; kept after stop for inspection of
        #: its path, though a temporary one no longer exists then)
        self.data_dir: Path | None = self._given_dir
        #: the port clients connect to; set once listening, kept after stop
        self.port: int | None = None
        #: akfak's MultiService (BrokerService + ListenerService); live only in the broker's reactor
        self.service: Any = None
        self.reactor: Any = None
        self._thread: ReactorThread | None = None
        self._mode: str | None = None  # "thread" (blocking API) or "reactor" (Deferred API)
        self._stopped = False

    def __repr__(self) -> str:
        state = "running" if self.running else ("stopped" if self._stopped else "not started")
        return f"<EmbeddedBroker {self.storage} {self.host}:{self.port} {state}>"

    # -- what tests read -------------------------------------------------------------------

    @property
    def bootstrap_servers(self) -> str:
        """"host:port" of the first listener, for bootstrap.servers / bootstrap_servers."""
        if self.port is None:
            raise RuntimeError("the broker has not been started")
        return self.bootstrap_for()

    def bootstrap_for(self, listener: str | None = None) -> str:
        """"host:port" of the listener named `listener` (by default the first)."""
        if not self.ports:
            raise RuntimeError("the broker has not been started")
        name = (listener or next(iter(self.ports))).upper()
        if name not in self.ports:
            raise KeyError(f"no listener {listener!r} (listeners: {', '.join(self.ports)})")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.ports[name]}"

    def client_config(self, user: str | None = None, *, listener: str | None = None,
                      certificate: str | None = None, java: bool = False,
                      mechanism: str | None = None, password: str | None = None) -> dict[str, str]:
        """The settings a client needs for `listener` (by default the first): bootstrap.servers,
        security.protocol and, for TLS, the CA file and (mutual TLS: `certificate`, a client
        certificate's CN, by default "client" when the broker requires one) the client's
        certificate and key; for SASL, `user`'s mechanism (`mechanism`, by default the first
        enabled) and credentials (`password`, by default the one in `security.users`).  In
        librdkafka's names (confluent-kafka, kcat), or the Java client's with `java=True`."""
        bootstrap = self.bootstrap_for(listener)
        config = {"bootstrap.servers": bootstrap, "security.protocol": "PLAINTEXT"}
        if self.security is not None:
            name = (listener or next(iter(self.ports))).upper()
            protocol = dict(self.security.listener_names())[name]
            config.update(self.security.client_properties(
                protocol, self.certificates, user=user, certificate=certificate, java=java,
                mechanism=mechanism, password=password))
        return config

    @property
    def running(self) -> bool:
        return self._mode is not None and not self._stopped

    @property
    def broker(self) -> Any:
        """akfak's Broker object.  It belongs to the broker's reactor thread: with the
        blocking API, touch it only inside `call()`."""
        if self.service is None:
            raise RuntimeError("the broker has not been started")
        return self.service.broker

    # -- blocking API --------------------------------------------------------------------

    def start(self) -> Self:
        """Start the broker in a reactor thread of its own; return once it accepts connections."""
        self._check_startable()
        self._make_data_dir()
        thread = ReactorThread(name="akfak-embedded-broker")
        thread.start()
        try:
            thread.call(self.timeout, self._start_in, thread.reactor)
        except BaseException:
            try:
                thread.stop(self.timeout)
            finally:
                self._remove_data_dir()
            raise
        self._thread, self._mode = thread, "thread"
        _track(self)
        return self

    def stop(self) -> None:
        """Stop the broker: close its port and every client connection, close storage, end its
        thread, remove the temporary data directory.  Idempotent."""
        if self._mode == "reactor":
            raise RuntimeError("this broker runs in your reactor: use stop_deferred()")
        if self._mode is None or self._stopped:
            return
        thread = self._thread
        assert thread is not None
        if thread.in_thread():
            raise RuntimeError("stop() called from the broker's own reactor thread")
        self._stopped = True
        _untrack(self)
        try:
            if thread.alive:
                thread.call(self.timeout, self._stop_in)
        finally:
            try:
                thread.stop(self.timeout)
            finally:
                self._remove_data_dir()

    def create_topic(
        self, name: str, partitions: int = 1, config: Mapping[str, object] | None = None
    ) -> None:
        """Create a topic (replication factor 1) and return once it exists."""
        self._require("thread", "create_topic_deferred()")
        self.call(self._create_topic_in, name, partitions, config)

    def call(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run `f` in the broker's reactor thread and return its result (waiting for a
        Deferred); for tests that inspect or poke the broker's state directly."""
        self._require("thread", "the reactor directly")
        assert self._thread is not None
        return self._thread.call(self.timeout, f, *args, **kwargs)

    def __enter__(self) -> Self:
        if self._mode is None:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- Deferred API (inside a running reactor) ---------------------------------------------

    def start_deferred(self, reactor: Any = None) -> Deferred[Self]:
        """Start the broker in `reactor` (the global one by default), from that reactor's
        thread; fires with this broker once it accepts connections."""
        self._check_startable()
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        self._make_data_dir()
        self._mode = "reactor"
        d = maybeDeferred(self._start_in, reactor)

        def failed(failure: Any) -> Any:
            self._stopped = True
            return self._remove_data_dir_in_reactor().addCallback(lambda _: failure)

        return d.addErrback(failed)

    def stop_deferred(self) -> Deferred[None]:
        """Stop a broker started with `start_deferred()`; fires once the port and every client
        connection are closed, storage is closed and the temporary directory is removed."""
        if self._mode == "thread":
            raise RuntimeError("this broker runs in its own thread: use stop()")
        if self._mode is None or self._stopped:
            return succeed(None)
        self._stopped = True
        d = self._stop_in()
        d.addBoth(lambda result: self._remove_data_dir_in_reactor().addCallback(lambda _: result))
        return d

    def create_topic_deferred(
        self, name: str, partitions: int = 1, config: Mapping[str, object] | None = None
    ) -> Deferred[None]:
        self._require("reactor", "create_topic()")
        return maybeDeferred(self._create_topic_in, name, partitions, config)

    # -- in the broker's reactor -------------------------------------------------------------

    def _start_in(self, reactor: Any) -> Deferred[Self]:
        assert self.data_dir is not None
        listen = [f"tcp:0:interface={self.host}"]
        if self.security is not None:
            listen = []  # Kafka's listeners, from the security settings
            self._overrides = _override_list(
                self._user_overrides, self.security.broker_properties(self.host, self.certificates))
        config = build_config(
            config=self._config_file,
            data_dir=str(self.data_dir),
            listen=listen,
            overrides=self._overrides,
            storage=self.storage,
            http=[f"tcp:0:interface={self.host}"] if self.http else [],
        )
        self.reactor = reactor
        self.service = service = makeService(config, reactor=reactor)
        try:
            service.startService()
        except BaseException:
            # a listener that failed at once leaves storage open: close what did start
            maybeDeferred(service.stopService).addErrback(
                lambda f: log.failure("stopping a broker that failed to start", f))
            raise
        if self.security is not None:
            # the users' SCRAM credentials, as `kafka-storage format --add-scram` makes them
            controller = service.broker.controller
            for upsertion in self.security.scram_upsertions(controller.image.scram_credentials):
                # one request per credential: Kafka refuses a user twice in one request
                for user, code, message in controller.alter_scram_credentials([], [upsertion]):
                    if code:
                        raise ValueError(f"SCRAM credential of {user!r}: {message}")
        services = self._listeners()
        web = [s for s in service if isinstance(s, HttpService)]
        listening = [s.listening for s in services] + [s.listening for s in web]

        def started(ports: list[IListeningPort]) -> Self:
            self.ports = {s.listener.name: p.getHost().port for s, p in zip(services, ports, strict=False)}
            self.port = ports[0].getHost().port
            if web:
                if web[0].url is None:
                    raise RuntimeError(f"the broker's HTTP server could not listen on {web[0].endpoint}")
                self.http_url = web[0].url
            return self

        def failed(failure: Any) -> Any:
            return maybeDeferred(service.stopService).addBoth(lambda _: failure)

        return gatherResults(listening, consumeErrors=True).addCallback(started).addErrback(failed)

    def _stop_in(self) -> Deferred[None]:
        # The listeners stop first and close the connections they accepted (a connection left
        # open would be served by a broker whose storage is closed), then storage closes.
        return self.service.stopService()

    def _create_topic_in(self, name: str, partitions: int, config: Mapping[str, object] | None) -> Any:
        # As CreateTopics does: through the controller (TopicRecord + PartitionRecords in the
        # metadata log, then the partition logs); errors are akfak.errors.KafkaError subclasses.
        controller = self.broker.controller
        configs = {k: _property_value(v) for k, v in (config or {}).items()}
        controller.create_topic(name, partitions, 1, configs)
        return controller.wait_durable().addCallback(lambda _: None)

    def _listeners(self) -> list[ListenerService]:
        return [s for s in self.service if isinstance(s, ListenerService)]

    # -- bookkeeping -------------------------------------------------------------------------

    def _check_startable(self) -> None:
        if self._mode is not None:
            raise RuntimeError("an EmbeddedBroker starts once; make a new one")

    def _require(self, mode: str, instead: str) -> None:
        if self._mode is None or self._stopped:
            raise RuntimeError("the broker is not running")
        if self._mode != mode:
            raise RuntimeError(f"this broker was started the other way: use {instead}")

    def _make_data_dir(self) -> None:
        if self._given_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix="akfak-test-"))
        else:
            self._given_dir.mkdir(parents=True, exist_ok=True)
        if self.security is not None and self.security.uses_tls:
            if self.security.certificates is not None:
                self.certificates = self.security.certificates
            else:
                # beside the log directory, not in it: a file there would look like a partition
                self._security_dir = Path(tempfile.mkdtemp(prefix="akfak-tls-"))
                self.certificates = Certificates(self._security_dir)

    def _remove_data_dir(self) -> None:
        if self._given_dir is None and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        if self._security_dir is not None:
            shutil.rmtree(self._security_dir, ignore_errors=True)

    def _remove_data_dir_in_reactor(self) -> Deferred[None]:
        if (self._given_dir is None and self.data_dir is not None) or self._security_dir is not None:
            # removing a directory tree is blocking I/O: not on the reactor
            return deferToThreadPool(self.reactor, self.reactor.getThreadPool(), self._remove_data_dir)
        return succeed(None)


def _track(broker: EmbeddedBroker) -> None:
    global _exit_hook_registered
    with _live_lock:
        _live.add(broker)
        if not _exit_hook_registered:
            _exit_hook_registered = True
            _register_exit_hook()


def _untrack(broker: EmbeddedBroker) -> None:
    with _live_lock:
        _live.discard(broker)


def _register_exit_hook() -> None:
    # threading's exit hooks run before the interpreter joins non-daemon threads (a reactor's
    # thread pool workers are such threads), while the brokers' threads are still alive to stop
    # them cleanly; atexit would run only after that join, i.e. possibly never.
    register = getattr(threading, "_register_atexit", None)
    if register is None:
        import atexit

        register = atexit.register
    with contextlib.suppress(RuntimeError):  # already shutting down
        register(stop_all)


def stop_all() -> None:
    """Stop every broker started with the blocking API and not stopped yet (run at exit)."""
    with _live_lock:
        brokers = list(_live)
    for broker in brokers:
        try:
            broker.stop()
        except Exception:
            log.failure("stopping {broker} at exit", broker=broker)


@contextmanager
def running_broker(
    storage: str = "memory",
    data_dir: str | os.PathLike[str] | None = None,
    overrides: Overrides | None = None,
    **kwargs: Any,
) -> Iterator[EmbeddedBroker]:
    """`with running_broker() as broker:` -- a started EmbeddedBroker, stopped on exit."""
    broker = EmbeddedBroker(storage=storage, data_dir=data_dir, overrides=overrides, **kwargs)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def start_broker(
    storage: str = "memory",
    data_dir: str | os.PathLike[str] | None = None,
    overrides: Overrides | None = None,
    *,
    reactor: Any = None,
    **kwargs: Any,
) -> Deferred[EmbeddedBroker]:
    """For Twisted code (trial, pytest-twisted): a Deferred firing with an EmbeddedBroker
    listening in `reactor` (the global reactor by default).  Stop it with `stop_deferred()`."""
    broker = EmbeddedBroker(storage=storage, data_dir=data_dir, overrides=overrides, **kwargs)
    return broker.start_deferred(reactor)
