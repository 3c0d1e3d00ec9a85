"""What each answered request looked like: events for metrics and the request inspector.

The protocol records, for every request it answers, a `RequestEvent` and hands it to the
broker's `RequestObservers`.  Nothing is recorded while no one observes, so the hot path
pays one truthiness test per request.  Observers run on the reactor once the response's
last byte has left for the socket, as Kafka records its request metrics when the send
completes (at once when nothing is sent back): they must be quick and must not keep what
they do not need (a Fetch response holds the stored batches it sent).  A response whose
connection closes before it is sent is not observed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from twisted.logger import Logger

log = Logger()


@dataclass(slots=True)
class RequestEvent:
    """One request and its response, as the connection saw them."""

    #: the connection's number on this broker (1, 2, ...), stable for its lifetime
    connection: int
    peer: str
    listener: str
    client_id: str | None
    api_key: int
    api_version: int
    correlation_id: int
    #: the request frame's size in bytes (without the 4-byte length)
    request_size: int
    #: the response's size in bytes, None when nothing is sent back (Produce acks=0)
    response_size: int | None
    #: `time.perf_counter()` seconds: its handler began (the frame decoded), the handler's
    #: answer was ready, the answer went to the connection's writer (behind the answers to
    #: earlier requests of the connection)
    received: float
    answered: float
    sent: float
    #: the decoded request and response (kio entities); the response is None with no answer
    request: object
    response: object | None
    #: the read that completed the frame (earlier frames of that read, or a pause of the
    #: connection, kept it waiting until `received`), and the answer's last byte left for the
    #: socket (or the TLS transport); Kafka's request metrics split a request's time so:
    #: request queue, local, response queue, response send
    arrived: float = 0.0
    flushed: float = 0.0


Observer = Callable[[RequestEvent], None]


class RequestObservers:
    """The broker's observers of answered requests."""

    def __init__(self) -> None:
        self._observers: list[Observer] = []

    def __bool__(self) -> bool:
        return bool(self._observers)

    def add(self, observer: Observer) -> None:
        self._observers.append(observer)

    def remove(self, observer: Observer) -> None:
        self._observers.remove(observer)

    def emit(self, event: RequestEvent) -> None:
        for observer in list(self._observers):
            try:
                observer(event)
            except Exception:
                # an observer's bug must not cost the client its connection
                log.failure("Request observer {observer!r} failed; removing it", observer=observer)
                self._observers.remove(observer)
