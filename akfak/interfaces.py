"""The contracts between akfak's layers (zope.interface).

A connection finds an `IRequestHandler` for each request's API key; handlers
reach storage only through the storage interfaces below, which have an on-disk
and an in-memory provider passing the same tests.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface


class IRequestHandler(Interface):
    """Answers one Kafka API (one API key) over a range of versions.

    The handler registry is the single source of truth for what the broker
    supports: ApiVersions answers from it.
    """

    api_key = Attribute("The Kafka API key handled (int).")
    min_version = Attribute("Lowest version advertised and accepted (int).")
    max_version = Attribute("Highest version advertised and accepted (int).")

    def is_flexible(version: int) -> bool:  # type: ignore[misc]
        """Whether `version` uses flexible encoding (request header v2, response header v1)."""

    def decode(version: int, body: bytes, offset: int) -> object:  # type: ignore[misc]
        """Decode the request body at `offset` of `body`; raise ValueError if it is malformed."""

    def handle(request: object, context: object) -> object:  # type: ignore[misc]
        """Answer `request` (with a `RequestContext`).

        Returns the response entity, a Deferred firing with it, or None when
        Kafka sends no response at all (Produce with acks=0).
        """

    def encode(version: int, response: object) -> bytes:  # type: ignore[misc]
        """Encode a response body (without the response header)."""
