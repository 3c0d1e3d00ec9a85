"""Who may see /metrics and the console.

- A broker with SASL listeners (SASL_PLAINTEXT, SASL_SSL) asks every HTTP request for Basic
  authentication against the same users Kafka clients log in as: the PLAIN users of the
  listeners' JAAS configs (`user_<name>="<password>"`), and the SCRAM credentials
  (kafka-configs --alter --add-config 'SCRAM-SHA-256=[password=...]') when a listener enables
  a SCRAM mechanism, the password checked against the stored key (PBKDF2 on a thread; a
  password once verified for a credential is remembered while that credential stands).  A
  refusal is answered 401 after `connection.failed.authentication.delay.ms`, as a Kafka
  client's failed login is.  OAUTHBEARER users have no password: with only that mechanism,
  every request is refused.
- Without SASL listeners HTTP is open, so it is served only on loopback: an endpoint that
  listens elsewhere (all interfaces, a public address) is refused with a log line unless
  `akfak.http.allow.remote=true`.  Unix sockets count as local.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from typing import Any

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.web.guard import BasicCredentialFactory, HTTPAuthSessionWrapper
from twisted.web.resource import IResource, Resource
from zope.interface import implementer

from akfak.broker import Broker
from akfak.log.threads import defer_to_thread
from akfak.security import scram
from akfak.security.sasl import PLAIN, SASL_PROTOCOLS, listener_protocol

log = Logger()

REALM = b"akfak"
ALLOW_REMOTE = "akfak.http.allow.remote"


def sasl_listeners(broker: Broker) -> list[str]:
    config = broker.config
    return [listener.name for listener in config.listeners()
            if listener_protocol(config, listener.name) in SASL_PROTOCOLS]


def http_secured(broker: Broker) -> bool:
    """Whether HTTP asks for the broker's users (it has SASL listeners)."""
    return bool(sasl_listeners(broker))


def may_serve_on(broker: Broker, host: str | None) -> bool:
    """Whether HTTP may listen on `host` (None: not an IP socket, e.g. a Unix socket)."""
    if host is None or http_secured(broker) or broker.config.get_bool(ALLOW_REMOTE):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


@implementer(ICredentialsChecker)
class BrokerUsers:
    """Checks a user name and password against the broker's SASL users."""

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.plain: dict[str, str] = {}
        self.scram_mechanisms: list[str] = []
        for name in sasl_listeners(broker):
            settings = broker.sasl.for_listener(name)
            if PLAIN in settings.mechanisms:
                for user, password in settings.plain_users.items():
                    self.plain.setdefault(user, password)
            self.scram_mechanisms.extend(m for m in settings.mechanisms
                                         if m in scram.MECHANISMS and m not in self.scram_mechanisms)
        #: (user, mechanism, password digest) -> the credential it was verified against
        self._verified: dict[tuple[str, str, bytes], scram.ScramCredential] = {}

    def requestAvatarId(self, credentials: Any) -> Deferred[bytes]:
        try:
            user = credentials.username.decode("utf-8")
            password = credentials.password.decode("utf-8")
        except UnicodeDecodeError:
            return self._refuse("?", "not UTF-8")
        expected = self.plain.get(user)
        if expected is not None:
            if hmac.compare_digest(expected.encode(), password.encode()):
                return succeed(credentials.username)
            return self._refuse(user, "wrong password")
        credentials_of = self.broker.image.scram_credentials
        for mechanism in self.scram_mechanisms:
            credential = credentials_of.get((user, mechanism))
            if credential is None:
                continue
            key = (user, mechanism, hashlib.sha256(password.encode()).digest())
            if self._verified.get(key) is credential:
                return succeed(credentials.username)
            checking = defer_to_thread(self.broker.clock, _scram_matches, mechanism, password,
                                       credential)

            def checked(matches: bool, key: tuple[str, str, bytes] = key,
                        credential: scram.ScramCredential = credential) -> Any:
                if not matches:
                    return self._refuse(user, "wrong password")
                self._verified[key] = credential
                return credentials.username

            return checking.addCallback(checked)
        return self._refuse(user, "no such user")

    def _refuse(self, user: str, why: str) -> Deferred[bytes]:
        log.info("HTTP authentication of {user!r} failed: {why}", user=user, why=why)
        delay = self.broker.sasl.failed_delay
        if delay <= 0:
            return fail(UnauthorizedLogin())
        return deferLater(self.broker.clock, delay, lambda: fail(UnauthorizedLogin()))


def _scram_matches(mechanism: str, password: str, credential: scram.ScramCredential) -> bool:
    """Whether `password` gives the credential's StoredKey (what a SCRAM client proves)."""
    salted = scram.salted_password(mechanism, password, credential.salt, credential.iterations)
    derived = scram.credential_from_salted(mechanism, credential.salt, salted, credential.iterations)
    return hmac.compare_digest(derived.stored_key, credential.stored_key)


@implementer(IRealm)
class _Realm:
    def __init__(self, root: Resource) -> None:
        self.root = root

    def requestAvatar(self, avatar_id: bytes, mind: Any, *interfaces: Any) -> tuple[Any, Any, Any]:
        if IResource not in interfaces:
            raise NotImplementedError("akfak's HTTP realm gives resources only")
        return IResource, self.root, lambda: None


def secure(broker: Broker, root: Resource) -> IResource:
    """`root` behind Basic authentication when the broker has SASL users, else as it is."""
    if not http_secured(broker):
        return root
    portal = Portal(_Realm(root), [BrokerUsers(broker)])
    return HTTPAuthSessionWrapper(portal, [BasicCredentialFactory(REALM)])
