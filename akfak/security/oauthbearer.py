"""SASL/OAUTHBEARER (RFC 7628) as Kafka's OAuthBearerSaslServer, with its unsecured validator.

- The client's initial response is `n,[a=authzid],\\x01auth=Bearer <token>\\x01[key=value\\x01]*\\x01`.
  A valid token completes the exchange; its principal is `User:<principal claim>`, and its
  expiry bounds the session (SaslAuthenticate's session_lifetime_ms, KIP-368).
- An invalid token is answered, as RFC 7628 says, with an error challenge
  (`{"status":"invalid_token"}`, or `insufficient_scope` with the required scope); the client
  then sends `\\x01` and authentication fails with that JSON as the message.
- The default validator is Kafka's OAuthBearerUnsecuredValidatorCallbackHandler, for
  development only: an unsecured JWS (`alg: none`, no signature) whose claims are checked with
  the login module options `unsecuredValidatorPrincipalClaimName` (default `sub`),
  `unsecuredValidatorScopeClaimName` (`scope`), `unsecuredValidatorRequiredScope` (space
  separated) and `unsecuredValidatorAllowableClockSkewMs` (0): `exp` is required and must be in
  the future, `iat` (optional) not in the future, `exp` after `iat`.
- A real validator is a Python callable named by
  `listener.name.<l>.oauthbearer.sasl.server.callback.handler.class=package.module:function`
  (the colon tells it from a Java class name). It is called as `function(token, options, now_ms)`
  and returns a `ValidatedToken`, or raises `TokenRejected`.
"""

from __future__ import annotations

import base64
import importlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

UNSECURED_VALIDATOR = ("org.apache.kafka.common.security.oauthbearer.internals.unsecured."
                       "OAuthBearerUnsecuredValidatorCallbackHandler")

_SASLNAME = r"(?:[\x01-\x2B\x2D-\x3C\x3E-\x7F]|=2C|=3D)+"
_KVPAIRS = r"(?:[A-Za-z]+=[\x21-\x7E \t\r\n]+\x01)*"
_INITIAL = re.compile(rf"n,(?:a=(?P<authzid>{_SASLNAME}))?,\x01(?P<kvpairs>{_KVPAIRS})\x01", re.S)
_AUTH = re.compile(r"(?P<scheme>\w+) +(?P<token>[-_~+/.a-zA-Z0-9]+=*)")


@dataclass(frozen=True)
class ValidatedToken:
    """What a validator says of a good token."""

    principal: str
    #: when the token expires (ms since the epoch)
    lifetime_ms: int
    scope: frozenset[str] = field(default_factory=frozenset)


class TokenRejected(Exception):
    """A validator refuses the token: `status` is RFC 7628's error status; `scope` the scope
    that would have been needed (insufficient_scope)."""

    def __init__(self, reason: str, status: str = "invalid_token", scope: str | None = None):
        super().__init__(reason)
        self.status = status
        self.scope = scope


class OAuthError(Exception):
    """The exchange failed; `public` as akfak.security.scram.ScramError."""

    def __init__(self, message: str, *, public: bool = False) -> None:
        super().__init__(message)
        self.public = public


Validator = Callable[[str, Mapping[str, str], int], ValidatedToken]


def _b64json(part: str) -> dict[str, Any]:
    try:
        value = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (ValueError, UnicodeDecodeError):
        raise TokenRejected("malformed JSON") from None
    if not isinstance(value, dict):
        raise TokenRejected("malformed JSON")
    return value


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenRejected(f"The {name} claim had the incorrect type: {type(value).__name__}")
    return float(value)


def unsecured_validator(token: str, options: Mapping[str, str], now_ms: int) -> ValidatedToken:
    """Kafka's OAuthBearerUnsecuredValidatorCallbackHandler."""
    principal_claim = (options.get("unsecuredValidatorPrincipalClaimName") or "").strip() or "sub"
    scope_claim = (options.get("unsecuredValidatorScopeClaimName") or "").strip() or "scope"
    required = (options.get("unsecuredValidatorRequiredScope") or "").split()
    skew_text = (options.get("unsecuredValidatorAllowableClockSkewMs") or "").strip()
    skew = int(skew_text) if skew_text else 0
    if ".." in token:
        raise TokenRejected("Malformed compact serialization contains '..'")
    parts = token.split(".")
    if len(parts) == 2 and token.endswith("."):
        parts.append("")
    if len(parts) != 3:
        raise TokenRejected("Unsecured JWS compact serializations must have 3 dot-separated "
                            "Base64URL-encoded values")
    header, claims = _b64json(parts[0]), _b64json(parts[1])
    if header.get("alg") != "none":
        raise TokenRejected("Unsecured JWS must have 'none' for an algorithm")
    if parts[2]:
        raise TokenRejected("Unsecured JWS must not contain a digital signature")
    exp = _number(claims, "exp")
    if exp is None:
        raise TokenRejected("No expiration time in JWT")
    principal = claims.get(principal_claim)
    if principal is None:
        raise TokenRejected(f"Required claim missing: {principal_claim}")
    if not isinstance(principal, str) or not principal.strip():
        raise TokenRejected(f"No principal name in JWT claim: {principal_claim}")
    iat = _number(claims, "iat")
    if iat is not None and 1000 * iat > now_ms + skew:
        raise TokenRejected(f"The Issued At value ({iat:f} seconds) was after the indicated time "
                            f"({now_ms} ms) plus allowable clock skew ({skew} ms)")
    if now_ms - skew >= 1000 * exp:
        raise TokenRejected(f"The indicated time ({now_ms} ms) minus allowable clock skew ({skew} ms) "
                            f"was on or after the Expiration Time value ({exp:f} seconds)")
    if iat is not None and exp <= iat:
        raise TokenRejected(f"The Expiration Time time ({exp:f} seconds) was not after the Issued "
                            f"At time ({iat:f} seconds)")
    raw_scope = claims.get(scope_claim)
    scope = frozenset(raw_scope.split() if isinstance(raw_scope, str)
                      else raw_scope if isinstance(raw_scope, list) else ())
    for element in required:
        if element not in scope:
            raise TokenRejected(f"The provided scope ({sorted(scope)}) was missing a required "
                                f"scope ({element}).  All required scope elements: {required}",
                                status="insufficient_scope", scope=str(required))
    return ValidatedToken(principal, int(exp * 1000), scope)


def load_validator(name: str | None) -> Validator:
    """The validator `...oauthbearer.sasl.server.callback.handler.class` names (None: unsecured)."""
    if not name or name == UNSECURED_VALIDATOR:
        return unsecured_validator
    module, sep, attr = name.partition(":")
    if not sep:
        raise ValueError(f"sasl.server.callback.handler.class={name}: akfak takes Kafka's unsecured "
                         "validator or a Python callable as package.module:function")
    found: Validator = getattr(importlib.import_module(module), attr)
    return found


class OAuthBearerServer:
    """One OAUTHBEARER exchange."""

    mechanism = "OAUTHBEARER"

    def __init__(self, validator: Validator, options: Mapping[str, str], now_ms: Callable[[], int]):
        self._validator = validator
        self._options = options
        self._now_ms = now_ms
        self._error: str | None = None
        #: why the token was refused, for the broker's log line (the token itself never is)
        self.rejection: str | None = None
        self.complete = False
        self.username: str | None = None
        #: the token's expiry, which bounds the session
        self.credential_expiry_ms: int | None = None

    def evaluate(self, response: bytes) -> bytes:
        if response == b"\x01" and self._error is not None:
            raise OAuthError(self._error, public=True)
        self._error = None
        m = _INITIAL.fullmatch(response.decode("utf-8", "replace"))
        if m is None:
            raise OAuthError("Invalid OAUTHBEARER client first message")
        pairs = dict(p.split("=", 1) for p in m["kvpairs"].split("\x01") if p)
        auth = pairs.get("auth")
        if auth is None:
            raise OAuthError("Invalid OAUTHBEARER client first message: 'auth' not specified")
        a = _AUTH.fullmatch(auth)
        if a is None:
            raise OAuthError("Invalid OAUTHBEARER client first message: invalid 'auth' format")
        if a["scheme"].lower() != "bearer":
            raise OAuthError(f"Invalid scheme in OAUTHBEARER client first message: {a['scheme']}")
        try:
            token = self._validator(a["token"], self._options, self._now_ms())
        except TokenRejected as e:
            error = f'{{"status":"{e.status}"'
            if e.scope is not None:
                error += f', "scope":"{e.scope}"'
            self._error = error + "}"
            self.rejection = str(e)
            return self._error.encode()
        authzid = m["authzid"] or ""
        if authzid and authzid != token.principal:
            raise OAuthError("Authentication failed: Client requested an authorization id "
                             f"({authzid}) that is different from the token's principal name "
                             f"({token.principal})", public=True)
        self.username = token.principal
        self.credential_expiry_ms = token.lifetime_ms
        self.complete = True
        return b""
