"""SASL on SASL_PLAINTEXT / SASL_SSL listeners, as Kafka's SaslServerAuthenticator runs it.

Settings (Kafka's keys; `<l>` is the listener name in lower case, `<m>` the mechanism's):
- `sasl.enabled.mechanisms` (Kafka's default GSSAPI, which akfak does not implement) or
  `listener.name.<l>.sasl.enabled.mechanisms`: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER.
- `listener.name.<l>.<m>.sasl.jaas.config`: the login module of each mechanism. PLAIN's holds the
  users (`user_<name>="<password>"`); OAUTHBEARER's the unsecured validator options. A bare
  `sasl.jaas.config` is ignored with Kafka's warning (the broker side must be prefixed).
- `connections.max.reauth.ms` (0: sessions do not expire), also per listener and mechanism
  (`listener.name.<l>.<m>.connections.max.reauth.ms`); an OAUTHBEARER session also ends when
  its token expires.
- `connection.failed.authentication.delay.ms` (100): how long a failed authentication waits
  before its answer is sent and the connection closed (Kafka's delay against brute force).
- `sasl.server.max.receive.size` (524288): a larger frame before authentication fails it.

The connection's state machine (`Authenticator`, one per connection of a SASL listener):
- before authentication only ApiVersions (once, before the handshake) and SaslHandshake are
  served; any other request closes the connection at once, as Kafka does;
- SaslHandshake v1 is followed by SaslAuthenticate requests carrying the tokens; after v0 the
  tokens are raw size-prefixed frames without Kafka headers (Kafka 4.1 still accepts v0);
- an unknown mechanism answers UNSUPPORTED_SASL_MECHANISM with the enabled list, a failed
  exchange SASL_AUTHENTICATION_FAILED; either is sent after the failure delay, then the
  connection closes. The message never says whether the user exists. One log line records each
  failure (peer, mechanism, the principal claimed); passwords, proofs and tokens never appear;
- once authenticated the connection's principal is `User:<name>` (what ACLs name). With a
  session lifetime (SaslAuthenticate v1+ `session_lifetime_ms`), a SaslHandshake starts a
  re-authentication (KIP-368: same mechanism and principal, at most once a second); a request
  that arrives after the session expired closes the connection instead of being served.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from akfak.config import BrokerConfig, ConfigError
from akfak.security import oauthbearer, scram
from akfak.security.jaas import JaasConfigError, LoginModule, single_login_module

if TYPE_CHECKING:
    from akfak.protocol import KafkaProtocol, RequestHeader

log = Logger()

SASL_HANDSHAKE, API_VERSIONS, SASL_AUTHENTICATE = 17, 18, 36
UNSUPPORTED_SASL_MECHANISM, ILLEGAL_SASL_STATE, SASL_AUTHENTICATION_FAILED = 33, 34, 58
PLAIN, OAUTHBEARER = "PLAIN", "OAUTHBEARER"
MECHANISMS = (PLAIN, *scram.MECHANISMS, OAUTHBEARER)
SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")
PROTOCOLS = ("PLAINTEXT", "SSL", *SASL_PROTOCOLS)
DEFAULT_FAILED_DELAY_MS = 100
DEFAULT_MAX_RECEIVE = 524288
#: Kafka's KafkaChannel.MIN_REAUTH_INTERVAL_ONE_SECOND_NANOS
MIN_REAUTH_INTERVAL = 1.0


def listener_protocol(config: BrokerConfig, listener: str) -> str:
    """The security protocol `listener.security.protocol.map` gives a listener."""
    for item in (config.get("listener.security.protocol.map") or "").split(","):
        name, sep, protocol = item.partition(":")
        if sep and name.strip() == listener:
            return protocol.strip().upper()
    return listener if listener in PROTOCOLS else "PLAINTEXT"


def connection_protocol(connection: Any) -> str:
    """A connection's security protocol: what its listener set on it, else the protocol map's."""
    found = getattr(connection, "security_protocol", None)
    if found:
        return str(found)
    return listener_protocol(connection.broker.config, connection.listener)


# -- mechanisms ------------------------------------------------------------------------------


class SaslFailure(Exception):
    """A failed exchange; `public` messages go to the client as they are (Kafka's
    SaslAuthenticationException), others are replaced by the generic one."""

    def __init__(self, message: str, *, public: bool = False) -> None:
        super().__init__(message)
        self.public = public


class PlainServer:
    """SASL/PLAIN (RFC 4616) as Kafka's PlainSaslServer, against the JAAS users."""

    mechanism = PLAIN

    def __init__(self, users: Mapping[str, str]) -> None:
        self._users = users
        self.complete = False
        self.username: str | None = None
        self.credential_expiry_ms: int | None = None

    def evaluate(self, response: bytes) -> bytes:
        tokens = response.decode("utf-8", "replace").split("\x00", 3)
        if len(tokens) != 3:
            raise SaslFailure(f"Invalid SASL/PLAIN response: expected 3 tokens, got {min(len(tokens), 4)}",
                              public=True)
        authzid, username, password = tokens
        if not username:
            raise SaslFailure("Authentication failed: username not specified", public=True)
        self.username = username
        if not password:
            raise SaslFailure("Authentication failed: password not specified", public=True)
        expected = self._users.get(username)
        # compared in constant time, and against something even for an unknown user
        matches = hmac.compare_digest((expected or "\x00" + password).encode(), password.encode())
        if expected is None or not matches:
            raise SaslFailure("Authentication failed: Invalid username or password", public=True)
        if authzid and authzid != username:
            raise SaslFailure("Authentication failed: Client requested an authorization id that is "
                              "different from username", public=True)
        self.complete = True
        return b""


# -- per-listener settings -------------------------------------------------------------------


@dataclass
class ListenerSasl:
    """The SASL settings of one listener."""

    listener: str
    mechanisms: list[str]
    plain_users: dict[str, str] = field(default_factory=dict, repr=False)
    oauth_options: dict[str, str] = field(default_factory=dict, repr=False)
    oauth_validator: oauthbearer.Validator = oauthbearer.unsecured_validator
    #: mechanism -> connections.max.reauth.ms (0: no limit)
    reauth_ms: dict[str, int] = field(default_factory=dict)


class SaslSettings:
    """Every listener's SASL settings, read from the broker config once per listener."""

    def __init__(self, config: BrokerConfig) -> None:
        self.config = config
        self._listeners: dict[str, ListenerSasl] = {}
        self.failed_delay = config.get_int("connection.failed.authentication.delay.ms",
                                           DEFAULT_FAILED_DELAY_MS) / 1000
        self.max_receive = config.get_int("sasl.server.max.receive.size", DEFAULT_MAX_RECEIVE)
        if config.get("sasl.jaas.config"):
            log.warn("Server config sasl.jaas.config should be prefixed with SASL mechanism name, "
                     "ignoring config")

    def _get(self, listener: str, key: str) -> str | None:
        prefixed = f"listener.name.{listener.lower()}.{key}"
        if self.config.is_set(prefixed):
            return self.config.get(prefixed)
        return self.config.get(key)

    def for_listener(self, listener: str) -> ListenerSasl:
        found = self._listeners.get(listener)
        if found is None:
            found = self._listeners[listener] = self._read(listener)
        return found

    def _read(self, listener: str) -> ListenerSasl:
        spec = self._get(listener, "sasl.enabled.mechanisms") or "GSSAPI"
        mechanisms = list(dict.fromkeys(m.strip() for m in spec.split(",") if m.strip()))
        unsupported = [m for m in mechanisms if m not in MECHANISMS]
        if unsupported or not mechanisms:
            raise ConfigError(
                f"listener {listener}: sasl.enabled.mechanisms={spec!r}: akfak implements "
                f"{', '.join(MECHANISMS)}" + (" (GSSAPI, Kafka's default, needs Kerberos)"
                                              if "GSSAPI" in unsupported else ""))
        settings = ListenerSasl(listener, mechanisms)
        for mechanism in mechanisms:
            lower = mechanism.lower()
            module = self.login_module(listener, mechanism)
            if mechanism == PLAIN:
                if module is None:
                    raise ConfigError(f"listener {listener}: PLAIN needs "
                                      f"listener.name.{listener.lower()}.plain.sasl.jaas.config")
                settings.plain_users = {k[5:]: v for k, v in module.options.items()
                                        if k.startswith("user_")}
            elif mechanism == OAUTHBEARER:
                settings.oauth_options = dict(module.options) if module is not None else {}
                name = self.config.get(f"listener.name.{listener.lower()}.oauthbearer."
                                       "sasl.server.callback.handler.class")
                try:
                    settings.oauth_validator = oauthbearer.load_validator(name)
                except (ImportError, AttributeError, ValueError) as e:
                    raise ConfigError(f"listener {listener}: {e}") from None
                skew = settings.oauth_options.get("unsecuredValidatorAllowableClockSkewMs", "").strip()
                if skew and (not skew.isdigit()):
                    raise ConfigError(f"Allowable clock skew millis must not be negative: {skew}")
            reauth = self._get(listener, f"{lower}.connections.max.reauth.ms")
            if reauth is None:
                reauth = self._get(listener, "connections.max.reauth.ms")
            try:
                settings.reauth_ms[mechanism] = int(reauth or 0)
            except ValueError:
                raise ConfigError(f"connections.max.reauth.ms={reauth!r} is not an integer") from None
        return settings

    def login_module(self, listener: str, mechanism: str) -> LoginModule | None:
        key = f"listener.name.{listener.lower()}.{mechanism.lower()}.sasl.jaas.config"
        text = self.config.get(key)
        if not text:
            return None
        try:
            return single_login_module(text)
        except JaasConfigError as e:
            raise ConfigError(f"{key}: {e}") from None


# -- the connection's state machine ------------------------------------------------------------

INITIAL, HANDSHAKE, AUTHENTICATE, RAW, COMPLETE, FAILED = (
    "initial", "handshake", "authenticate", "raw tokens", "complete", "failed")


@dataclass(frozen=True)
class AuthenticateResult:
    error_code: int
    error_message: str | None = None
    auth_bytes: bytes = b""
    session_lifetime_ms: int = 0
    #: the exchange failed: answer after the failure delay, then close
    failed: bool = False


class Authenticator:
    """SASL for one connection (Kafka's SaslServerAuthenticator and KafkaChannel's reauth)."""

    def __init__(self, connection: KafkaProtocol, settings: SaslSettings, listener: ListenerSasl):
        self.connection = connection
        self.settings = settings
        self.listener = listener
        self.state = INITIAL
        self.server: Any = None
        self.mechanism: str | None = None
        #: when the session ends (reactor seconds), None: never
        self.session_expiry: float | None = None
        self._last_reauth: float | None = None
        #: (mechanism, principal) of the session being re-authenticated
        self._previous: tuple[str, str] | None = None
        self._bad_mechanism: str | None = None
        #: why the exchange failed, for the log line (the client may get a generic message)
        self._failure_reason = ""

    @property
    def complete(self) -> bool:
        return self.state == COMPLETE

    @property
    def _clock(self) -> Any:
        return self.connection.broker.clock

    def _what(self) -> str:
        return "re-authentication" if self._previous is not None else "authentication"

    # -- the gate: called by the connection for every frame -----------------------------------

    def take_frame(self, frame: bytes) -> bool:
        """True when the connection should parse and dispatch `frame` as a request; False
        when this authenticator consumed it (a raw token) or it must not be served."""
        state = self.state
        if state == COMPLETE:
            return True
        if state == FAILED:
            return False
        if len(frame) > self.settings.max_receive:
            self._fail(None, "Failing SASL authentication due to invalid receive size")
            return False
        if state == RAW:
            self._raw_token(frame)
            return False
        return True

    def admit(self, header: RequestHeader, handler: Any) -> bool:
        """Whether a parsed request may be served in the current state."""
        key = header.api_key
        if self.state == COMPLETE:
            now = self._clock.seconds()
            if key == SASL_HANDSHAKE and self.session_expiry is not None and (
                    self._last_reauth is None or now - self._last_reauth >= MIN_REAUTH_INTERVAL):
                self._last_reauth = now
                self._previous = (str(self.mechanism), self.connection.principal)
                self.state = HANDSHAKE
                return True
            if self.session_expiry is not None and now > self.session_expiry:
                self.connection.drop(f"SASL session of {self.connection.principal} ({self.mechanism}) "
                                     "expired without re-authentication")
                return False
            return True
        if self.state in (INITIAL, HANDSHAKE):
            if key == API_VERSIONS and self.state == INITIAL and self._previous is None:
                if handler.min_version <= header.api_version <= handler.max_version:
                    self.state = HANDSHAKE
                return True
            if key == SASL_HANDSHAKE:
                return True
            self.connection.drop(f"unexpected Kafka request of type {_api_name(handler)} during "
                                 f"SASL {'re-' if self._previous else ''}handshake")
            return False
        if self.state == AUTHENTICATE and key == SASL_AUTHENTICATE:
            return True
        self._fail(None, f"Unexpected Kafka request of type {_api_name(handler)} during SASL "
                         "authentication.")
        return False

    # -- what the SaslHandshake and SaslAuthenticate handlers ask -------------------------------

    @property
    def expects_handshake(self) -> bool:
        return self.state in (INITIAL, HANDSHAKE)

    @property
    def expects_authenticate(self) -> bool:
        return self.state == AUTHENTICATE

    def handshake(self, mechanism: str, version: int) -> tuple[int, bool]:
        """(error code, failed) for a SaslHandshake naming `mechanism`."""
        if mechanism not in self.listener.mechanisms:
            return UNSUPPORTED_SASL_MECHANISM, True
        if self._previous is not None and mechanism != self._previous[0]:
            self._bad_mechanism = (f"SASL mechanism '{mechanism}' requested by client is not "
                                   f"supported for re-authentication of mechanism "
                                   f"'{self._previous[0]}'")
        self.mechanism = mechanism
        self.server = self._new_server(mechanism)
        self.state = AUTHENTICATE if version >= 1 else RAW
        return 0, False

    def authenticate(self, token: bytes) -> AuthenticateResult:
        """Evaluate one SaslAuthenticate token."""
        if self._bad_mechanism is not None:
            return AuthenticateResult(SASL_AUTHENTICATION_FAILED, self._bad_mechanism, failed=True)
        try:
            challenge = self.server.evaluate(token)
            lifetime = self._completed() if self.server.complete else 0
        except (SaslFailure, scram.ScramError, oauthbearer.OAuthError) as e:
            message = str(e) if e.public else (
                f"Authentication failed during {self._what()} due to invalid credentials with SASL "
                f"mechanism {self.mechanism}")
            self._failure_reason = getattr(self.server, "rejection", None) or str(e)
            return AuthenticateResult(SASL_AUTHENTICATION_FAILED, message, failed=True)
        return AuthenticateResult(0, None, challenge, lifetime)

    def fail_later(self, response: Any, reason: str | None = None) -> Deferred[Any]:
        """Log the failure, then after the failure delay send `response` and close."""
        return self._fail(response, reason or self._failure_reason)

    # -- internals --------------------------------------------------------------------------------

    def _new_server(self, mechanism: str) -> Any:
        if mechanism == PLAIN:
            return PlainServer(self.listener.plain_users)
        if mechanism == OAUTHBEARER:
            broker = self.connection.broker
            return oauthbearer.OAuthBearerServer(self.listener.oauth_validator,
                                                 self.listener.oauth_options, broker.now_ms)
        image_of = self.connection.broker

        def lookup(user: str) -> scram.ScramCredential | None:
            return image_of.image.scram_credentials.get((user, mechanism))

        return scram.ScramServer(mechanism, lookup)

    def _completed(self) -> int:
        """The exchange succeeded: set the principal; the session lifetime (ms, 0: none)."""
        principal = f"User:{self.server.username}"
        if self._previous is not None and principal != self._previous[1]:
            old, new = self._previous[1], principal
            raise SaslFailure(f"Cannot change principals during re-authentication from "
                              f"{old.replace(':', '.', 1)}: {new.replace(':', '.', 1)}", public=True)
        now_ms = self.connection.broker.now_ms()
        expiry_ms = self.server.credential_expiry_ms
        max_reauth = self.listener.reauth_ms.get(str(self.mechanism), 0)
        lifetime = 0
        self.session_expiry = None
        if expiry_ms is not None or max_reauth > 0:
            if expiry_ms is None:
                lifetime = max_reauth
            elif max_reauth <= 0:
                lifetime = max(0, expiry_ms - now_ms)
            else:
                lifetime = max(0, min(expiry_ms - now_ms, max_reauth))
            self.session_expiry = self._clock.seconds() + lifetime / 1000
        self.connection.principal = principal
        self.state = COMPLETE
        self._previous = None
        return lifetime

    def _raw_token(self, frame: bytes) -> None:
        """A SASL token after a v0 handshake: raw frames both ways, no Kafka headers."""
        result = self.authenticate(frame)
        if result.failed:
            self._fail(None, self._failure_reason)
            return
        connection = self.connection
        connection.transport.write(len(result.auth_bytes).to_bytes(4, "big") + result.auth_bytes)

    def _fail(self, response: Any, reason: str) -> Deferred[Any]:
        self.state = FAILED
        connection = self.connection
        claimed = getattr(self.server, "username", None)
        log.info("Failed {what} with {peer} (mechanism {mechanism}, principal {principal}): "
                 "{reason}", what=self._what(), peer=connection.peer,
                 mechanism=self.mechanism or "none", principal=f"User:{claimed}" if claimed
                 else "unknown", reason=reason)
        connection.pause("failed SASL authentication")
        call: Any = None

        def cancel(_: Deferred[Any]) -> None:
            if call is not None and call.active():
                call.cancel()

        done: Deferred[Any] = Deferred(cancel)

        def close() -> None:
            done.callback(response)  # the connection writes the answer, if there is one
            connection.transport.loseConnection()

        call = self._clock.callLater(self.settings.failed_delay, close)
        return done


def _api_name(handler: Any) -> str:
    return type(handler).__name__.removesuffix("Handler")


def authenticator_for(connection: KafkaProtocol) -> Authenticator | None:
    """The Authenticator of a new connection, None on a listener without SASL."""
    if connection_protocol(connection) not in SASL_PROTOCOLS:
        return None
    settings: SaslSettings = connection.broker.sasl
    return Authenticator(connection, settings, settings.for_listener(connection.listener))
