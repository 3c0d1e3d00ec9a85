"""SaslHandshake (key 17) v0-v1 and SaslAuthenticate (key 36) v0-v2.

Behaviour (Kafka's SaslServerAuthenticator, with the state machine in akfak.security.sasl):
- On a SASL listener before authentication: SaslHandshake answers NONE and the enabled
  mechanisms when the mechanism is enabled, else UNSUPPORTED_SASL_MECHANISM with the enabled
  list (sent after `connection.failed.authentication.delay.ms`, then the connection closes).
  v1 is followed by SaslAuthenticate requests; v0 by raw SASL tokens without Kafka headers.
- SaslAuthenticate evaluates one token: NONE with the server's token (and, v1+, the session
  lifetime once complete, KIP-368), or SASL_AUTHENTICATION_FAILED with Kafka's message (never
  saying whether the user exists), sent after the failure delay, then the connection closes.
- On a PLAINTEXT / SSL listener, or once authenticated (and not re-authenticating), both answer
  ILLEGAL_SASL_STATE as Kafka's KafkaApis does.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from kio.schema.errors import ErrorCode
from kio.static.primitive import i64Timedelta

from akfak.handlers.base import Handler, make
from akfak.protocol import RequestContext
from akfak.security.sasl import ILLEGAL_SASL_STATE

AFTER_AUTHENTICATION = "SaslAuthenticate request received after successful authentication"


def _sasl(context: RequestContext) -> Any:
    return getattr(context.connection, "sasl", None)


class SaslHandshakeHandler(Handler):
    api_key = 17
    min_version = 0
    max_version = 1

    def handle(self, request: Any, context: RequestContext) -> Any:
        response = self.response_type(context.api_version)
        sasl = _sasl(context)
        if sasl is None or not sasl.expects_handshake:
            return response(error_code=ErrorCode(ILLEGAL_SASL_STATE), mechanisms=())
        code, failed = sasl.handshake(request.mechanism, context.api_version)
        answer = response(error_code=ErrorCode(code), mechanisms=tuple(sasl.listener.mechanisms))
        if failed:
            return sasl.fail_later(answer, f"Unsupported SASL mechanism {request.mechanism}")
        return answer


class SaslAuthenticateHandler(Handler):
    api_key = 36
    min_version = 0
    max_version = 2

    def handle(self, request: Any, context: RequestContext) -> Any:
        response = self.response_type(context.api_version)
        sasl = _sasl(context)
        if sasl is None or not sasl.expects_authenticate:
            return make(response, error_code=ErrorCode(ILLEGAL_SASL_STATE),
                        error_message=AFTER_AUTHENTICATION, auth_bytes=b"",
                        session_lifetime=i64Timedelta.parse(timedelta(0)))
        result = sasl.authenticate(bytes(request.auth_bytes))
        answer = make(response, error_code=ErrorCode(result.error_code),
                      error_message=result.error_message, auth_bytes=result.auth_bytes,
                      session_lifetime=i64Timedelta.parse(
                          timedelta(milliseconds=result.session_lifetime_ms)))
        if result.failed:
            return sasl.fail_later(answer)
        return answer


HANDLERS = (SaslHandshakeHandler, SaslAuthenticateHandler)
