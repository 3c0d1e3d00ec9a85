"""CreateDelegationToken (key 38) v1-v3, RenewDelegationToken (39) v1-v2, ExpireDelegationToken
(40) v1-v2, DescribeDelegationToken (41) v1-v3.

Behavior (as Kafka 4's KafkaApis token handlers with delegation tokens disabled: no
`delegation.token.secret.key`, which akfak does not have):
- On a PLAINTEXT connection, or SSL without a client certificate (principal User:ANONYMOUS):
  DELEGATION_TOKEN_REQUEST_NOT_ALLOWED, as Kafka refuses tokens over channels that did not
  authenticate ("Delegation Token requests are not allowed on PLAINTEXT/1-way SSL channels ...").
- Elsewhere (SASL, mutual TLS): DELEGATION_TOKEN_AUTH_DISABLED.
- Create answers the token's owner (owner_principal_* when given, else the requester) and the
  requester, timestamps -1, no token id or HMAC; Renew and Expire an expiry timestamp of -1;
  Describe no tokens.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from kio.schema.errors import ErrorCode

from akfak.handlers.base import NO_THROTTLE, Handler, make
from akfak.protocol import RequestContext
from akfak.security.acls import ANONYMOUS

#: -1 in a non-nullable datetime_i64 field (kio writes it to the millisecond)
MINUS_ONE_MS = datetime.fromtimestamp(-0.001, UTC)


def refusal(context: RequestContext) -> ErrorCode:
    protocol = getattr(context.connection, "security_protocol", "PLAINTEXT")
    if protocol == "PLAINTEXT" or (protocol == "SSL" and context.principal == ANONYMOUS):
        return ErrorCode.delegation_token_request_not_allowed
    return ErrorCode.delegation_token_auth_disabled


def split_principal(principal: str) -> tuple[str, str]:
    kind, _, name = principal.partition(":")
    return kind, name


class CreateDelegationTokenHandler(Handler):
    api_key = 38
    min_version = 1
    max_version = 3

    def handle(self, request: Any, context: RequestContext) -> Any:
        requester = split_principal(context.principal)
        owner_name = getattr(request, "owner_principal_name", None)
        owner = (request.owner_principal_type or "User", owner_name) if owner_name else requester
        return make(self.response_type(context.api_version), error_code=refusal(context),
                    principal_type=owner[0], principal_name=owner[1],
                    token_requester_principal_type=requester[0],
                    token_requester_principal_name=requester[1],
                    issue_timestamp=MINUS_ONE_MS, expiry_timestamp=MINUS_ONE_MS,
                    max_timestamp=MINUS_ONE_MS, token_id="", hmac=b"", throttle_time=NO_THROTTLE)


class RenewDelegationTokenHandler(Handler):
    api_key = 39
    min_version = 1
    max_version = 2

    def handle(self, request: Any, context: RequestContext) -> Any:
        return self.response_type(context.api_version)(
            error_code=refusal(context), expiry_timestamp=MINUS_ONE_MS, throttle_time=NO_THROTTLE)


class ExpireDelegationTokenHandler(RenewDelegationTokenHandler):
    api_key = 40


class DescribeDelegationTokenHandler(Handler):
    api_key = 41
    min_version = 1
    max_version = 3

    def handle(self, request: Any, context: RequestContext) -> Any:
        return self.response_type(context.api_version)(
            error_code=refusal(context), tokens=(), throttle_time=NO_THROTTLE)


HANDLERS = (CreateDelegationTokenHandler, RenewDelegationTokenHandler, ExpireDelegationTokenHandler,
            DescribeDelegationTokenHandler)
