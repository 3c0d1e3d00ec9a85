"""A "real" OAUTHBEARER validator for tests/test_oauthbearer.py, named as
`listener.name.<l>.oauthbearer.sasl.server.callback.handler.class=tests.oauth_validator:validate`:
opaque tokens `issued-<user>` are good for an hour, anything else is refused."""

from __future__ import annotations

from collections.abc import Mapping

from akfak.security.oauthbearer import TokenRejected, ValidatedToken

#: every token the broker was asked about, to show the hook was called
SEEN: list[str] = []


def validate(token: str, options: Mapping[str, str], now_ms: int) -> ValidatedToken:
    SEEN.append(token)
    if not token.startswith("issued-"):
        raise TokenRejected("not one of ours")
    return ValidatedToken(token.removeprefix("issued-"), now_ms + 3_600_000,
                          frozenset(options.get("grant", "").split()))
