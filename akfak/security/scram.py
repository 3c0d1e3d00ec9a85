"""SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677) as Kafka's ScramSaslServer runs them.

Implemented on hashlib/hmac rather than a SCRAM library: the server side is three messages, and
Kafka's exact grammar (only the "n" GS2 header, its extension syntax, `=2C`/`=3D` user names,
passwords taken as plain UTF-8 without SASLprep) and its error messages are what clients see.

- Credentials are what UserScramCredentialRecords hold: salt, StoredKey = H(HMAC(salted, "Client
  Key")), ServerKey = HMAC(salted, "Server Key"), iterations; AlterUserScramCredentials sends the
  salted password (the client runs PBKDF2) and the controller derives the two keys.
- Exchange: client-first `n,[a=authzid],n=user,r=nonce[,ext=..]` -> server-first
  `r=nonce+servernonce,s=salt,i=iterations` -> client-final `c=..,r=..,p=proof` -> `v=signature`.
  An unknown user, a wrong proof and a malformed message all fail with the same answer to the
  client (Kafka's SaslException path); only an authzid other than the user is said as such.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

# Kafka's ScramMechanism: type code, hash, minimum iterations (maximum 16384 is the controller's)
MECHANISMS: dict[str, tuple[int, str]] = {"SCRAM-SHA-256": (1, "sha256"), "SCRAM-SHA-512": (2, "sha512")}
BY_TYPE = {code: name for name, (code, _) in MECHANISMS.items()}
MIN_ITERATIONS = 4096
MAX_ITERATIONS = 16384

_SASLNAME = r"(?:[\x01-\x2B\x2D-\x3C\x3E-\x7F]|=2C|=3D)+"
_PRINTABLE = r"[\x21-\x2B\x2D-\x7E]+"
_VALUE = r"[\x01-\x2B\x2D-\x7F]+"
_EXTENSIONS = rf"(?:,[A-Za-z]+={_VALUE})*"
_BASE64 = r"(?:[A-Za-z0-9/+]{4})*(?:[A-Za-z0-9/+]{3}=|[A-Za-z0-9/+]{2}==)?"
_CLIENT_FIRST = re.compile(
    rf"n,(?:a=(?P<authzid>{_SASLNAME}))?,(?:m={_VALUE},)?n=(?P<saslname>{_SASLNAME}),"
    rf"r=(?P<nonce>{_PRINTABLE})(?P<extensions>{_EXTENSIONS})")
_CLIENT_FINAL = re.compile(
    rf"c=(?P<channel>{_BASE64}),r=(?P<nonce>{_PRINTABLE}){_EXTENSIONS},p=(?P<proof>{_BASE64})")


class ScramError(Exception):
    """The exchange failed; `public` says whether Kafka sends this message to the client (its
    SaslAuthenticationException) or a generic one (its SaslException)."""

    def __init__(self, message: str, *, public: bool = False) -> None:
        super().__init__(message)
        self.public = public


@dataclass(frozen=True)
class ScramCredential:
    salt: bytes
    stored_key: bytes
    server_key: bytes
    iterations: int

    def __repr__(self) -> str:  # keys are secrets
        return f"ScramCredential(iterations={self.iterations})"


def _hmac(digest: str, key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, digest).digest()


def salted_password(mechanism: str, password: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac(MECHANISMS[mechanism][1], password.encode(), salt, iterations)


def credential_from_salted(mechanism: str, salt: bytes, salted: bytes, iterations: int
                           ) -> ScramCredential:
    """What the controller stores for an upsertion's salted password."""
    digest = MECHANISMS[mechanism][1]
    client_key = _hmac(digest, salted, b"Client Key")
    return ScramCredential(salt, hashlib.new(digest, client_key).digest(),
                           _hmac(digest, salted, b"Server Key"), iterations)


def make_credential(mechanism: str, password: str, iterations: int = MIN_ITERATIONS
                    ) -> ScramCredential:
    salt = secrets.token_bytes(32)
    return credential_from_salted(mechanism, salt,
                                  salted_password(mechanism, password, salt, iterations), iterations)


def username_of(saslname: str) -> str:
    """Kafka's ScramFormatter.username: `=2C` is a comma, `=3D` an equals sign."""
    name = saslname.replace("=2C", ",")
    if "=" in name.replace("=3D", ""):
        raise ScramError(f"Invalid username: {saslname}")
    return name.replace("=3D", "=")


def _random_nonce() -> str:
    # as Kafka's secureRandomString: a 130-bit random number in base 36
    n = secrets.randbits(130)
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while n:
        n, r = divmod(n, 36)
        out = digits[r] + out
    return out or "0"


class ScramServer:
    """One SCRAM exchange; `lookup(user)` gives the user's credential for this mechanism or None."""

    def __init__(self, mechanism: str, lookup) -> None:  # type: ignore[no-untyped-def]
        self.mechanism = mechanism
        self.digest = MECHANISMS[mechanism][1]
        self._lookup = lookup
        self._credential: ScramCredential | None = None
        self._client_first_bare = ""
        self._server_first = ""
        self._nonce = ""
        self.complete = False
        self.credential_expiry_ms: int | None = None  # SCRAM credentials do not expire
        #: the user the client named (known after the first message), for logs and principals
        self.username: str | None = None

    def evaluate(self, response: bytes) -> bytes:
        if self._credential is None:
            return self._first(response)
        return self._final(response)

    def _first(self, response: bytes) -> bytes:
        message = response.decode("utf-8", "replace")
        m = _CLIENT_FIRST.fullmatch(message)
        if m is None:
            raise ScramError(f"Invalid SCRAM client first message format: {message}")
        self.username = username = username_of(m["saslname"])
        credential = self._lookup(username)
        if credential is None:
            raise ScramError("Authentication failed: Invalid user credentials")
        authzid = m["authzid"] or ""
        if authzid and authzid != username:
            raise ScramError("Authentication failed: Client requested an authorization id that is "
                             "different from username", public=True)
        if credential.iterations < MIN_ITERATIONS:
            raise ScramError(f"Iterations {credential.iterations} is less than the minimum "
                             f"{MIN_ITERATIONS} for {self.mechanism}")
        self._credential = credential
        extensions = m["extensions"]
        self._client_first_bare = f"n={m['saslname']},r={m['nonce']}{extensions}"
        self._nonce = m["nonce"] + _random_nonce()
        self._server_first = (f"r={self._nonce},s={base64.b64encode(credential.salt).decode()},"
                              f"i={credential.iterations}")
        return self._server_first.encode()

    def _final(self, response: bytes) -> bytes:
        if self.complete:
            raise ScramError("Unexpected challenge in Sasl server state COMPLETE", public=True)
        credential = self._credential
        assert credential is not None
        message = response.decode("utf-8", "replace")
        m = _CLIENT_FINAL.fullmatch(message)
        if m is None:
            # (Kafka quotes the message; the proof in it is left out of akfak's log line)
            raise ScramError("Invalid SCRAM client final message format")
        if m["nonce"] != self._nonce:
            raise ScramError("Invalid client nonce in the final client message.")
        without_proof = f"c={m['channel']},r={m['nonce']}"
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        signature = _hmac(self.digest, credential.stored_key, auth_message)
        proof = base64.b64decode(m["proof"])
        if len(proof) != len(signature):
            raise ScramError("Invalid client credentials")
        client_key = bytes(a ^ b for a, b in zip(signature, proof, strict=True))
        if not hmac.compare_digest(hashlib.new(self.digest, client_key).digest(),
                                   credential.stored_key):
            raise ScramError("Invalid client credentials")
        self.complete = True
        server_signature = _hmac(self.digest, credential.server_key, auth_message)
        self._credential = credential  # kept: a further message is a state error, not a first
        return b"v=" + base64.b64encode(server_signature)


class ScramClient:
    """The client side of one exchange, as Kafka's ScramSaslClient (a broker's inter-broker
    connections): `first()`, then `final(server_first)`, then `verify(server_final)`."""

    def __init__(self, mechanism: str, username: str, password: str) -> None:
        self.digest = MECHANISMS[mechanism][1]
        self.mechanism, self.password = mechanism, password
        self._bare = f"n={username.replace('=', '=3D').replace(',', '=2C')},r={_random_nonce()}"
        self._auth_message = b""
        self._salted = b""

    def first(self) -> bytes:
        return f"n,,{self._bare}".encode()

    def final(self, server_first: bytes) -> bytes:
        message = server_first.decode("utf-8", "replace")
        fields = dict(item.partition("=")[::2] for item in message.split(","))
        nonce, iterations = fields.get("r", ""), fields.get("i", "")
        if not nonce.startswith(self._bare.rpartition(",r=")[2]) or not iterations.isdigit():
            raise ScramError(f"Invalid SCRAM server first message format: {message}")
        if int(iterations) < MIN_ITERATIONS:
            raise ScramError(f"Requested iterations {iterations} is less than the minimum "
                             f"{MIN_ITERATIONS} for {self.mechanism}")
        salt = base64.b64decode(fields.get("s", ""))
        self._salted = salted_password(self.mechanism, self.password, salt, int(iterations))
        without_proof = f"c=biws,r={nonce}"  # biws: base64 of the GS2 header "n,,"
        self._auth_message = f"{self._bare},{message},{without_proof}".encode()
        client_key = _hmac(self.digest, self._salted, b"Client Key")
        signature = _hmac(self.digest, hashlib.new(self.digest, client_key).digest(),
                          self._auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify(self, server_final: bytes) -> None:
        message = server_final.decode("utf-8", "replace")
        if message.startswith("e="):
            raise ScramError(f"Sasl authentication using {self.mechanism} failed with error: "
                             f"{message[2:]}")
        server_key = _hmac(self.digest, self._salted, b"Server Key")
        expected = b"v=" + base64.b64encode(_hmac(self.digest, server_key, self._auth_message))
        if not hmac.compare_digest(expected, server_final):
            raise ScramError("Invalid server signature in server final message")
