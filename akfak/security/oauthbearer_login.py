"""The client side of SASL/OAUTHBEARER for a broker logging in to the others (akfak/peers.py).

As Kafka's OAuthBearerUnsecuredLoginCallbackHandler, the login module's options make an
unsecured JWS (`alg: none`, no signature), for development: the principal claim
(`unsecuredLoginPrincipalClaimName`, default `sub`) from `unsecuredLoginStringClaim_<name>`
(required), other claims from `unsecuredLoginStringClaim_<name>`,
`unsecuredLoginNumberClaim_<name>` and `unsecuredLoginListClaim_<name>` (its first character
separates the values), `iat` now and `exp` `unsecuredLoginLifetimeSeconds` (3600) later; SASL
extensions from `unsecuredLoginExtension_<name>`.  A new token is made for every login, so a
session that ends with its token (KIP-368) is followed by one with a fresh token.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

STRING, NUMBER, LIST, EXTENSION = ("unsecuredLoginStringClaim_", "unsecuredLoginNumberClaim_",
                                   "unsecuredLoginListClaim_", "unsecuredLoginExtension_")


class LoginOptionsError(ValueError):
    """The login module's options cannot make a token (Kafka refuses them too)."""


def _b64(value: dict[str, Any]) -> str:
    raw = json.dumps(value, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _claims(options: Mapping[str, str], now_ms: int) -> dict[str, Any]:
    principal = (options.get("unsecuredLoginPrincipalClaimName") or "").strip() or "sub"
    lifetime = (options.get("unsecuredLoginLifetimeSeconds") or "").strip() or "3600"
    claims: dict[str, Any] = {}
    for key, value in options.items():
        for prefix in (STRING, NUMBER, LIST):
            if not key.startswith(prefix) or len(key) == len(prefix):
                continue
            name = key[len(prefix):]
            if name in ("iat", "exp"):
                raise LoginOptionsError(f"{key}: the {name} claim is set automatically")
            if prefix == NUMBER:
                try:
                    claims[name] = float(value) if "." in value else int(value)
                except ValueError:
                    raise LoginOptionsError(f"{key}={value}: not a number") from None
            elif prefix == LIST:
                claims[name] = [v for v in value[1:].split(value[0])] if value else []
            else:
                claims[name] = value
    if not isinstance(claims.get(principal), str) or not claims[principal].strip():
        raise LoginOptionsError(f"{STRING}{principal} is required: the principal's name (the "
                                f"{principal} claim)")
    try:
        seconds = int(lifetime)
    except ValueError:
        raise LoginOptionsError(f"unsecuredLoginLifetimeSeconds={lifetime}: not a number") from None
    claims["iat"] = now_ms / 1000
    claims["exp"] = now_ms / 1000 + seconds
    return claims


def check_options(options: Mapping[str, str]) -> None:
    """Raise LoginOptionsError if these options cannot make a token."""
    _claims(options, 0)


def unsecured_token(options: Mapping[str, str], now_ms: int) -> str:
    return f"{_b64({'alg': 'none'})}.{_b64(_claims(options, now_ms))}."


def initial_response(options: Mapping[str, str], now_ms: int) -> bytes:
    """RFC 7628's client first message: the token, then the SASL extensions."""
    extensions = "".join(f"{key[len(EXTENSION):]}={value}\x01"
                         for key, value in options.items()
                         if key.startswith(EXTENSION) and len(key) > len(EXTENSION))
    return f"n,,\x01auth=Bearer {unsecured_token(options, now_ms)}\x01{extensions}\x01".encode()
