"""Security settings for an EmbeddedBroker: listeners, generated TLS certificates, users, ACLs.

    from akfak.testing import EmbeddedBroker
    from akfak.testing.security import Security

    with EmbeddedBroker(security=Security(listeners=["SSL"], client_auth="required")) as broker:
        producer = Producer(broker.client_config())      # bootstrap, SSL, CA, client cert and key

    security = Security(listeners=["SASL_PLAINTEXT"], users={"alice": "alice-secret"},
                        mechanisms=["SCRAM-SHA-256"])
    with EmbeddedBroker(security=security) as broker:
        producer = Producer(broker.client_config("alice"))   # bootstrap, protocol, mechanism, login

`Security` names the broker's listeners by security protocol (PLAINTEXT, SSL, SASL_PLAINTEXT,
SASL_SSL; "NAME:PROTOCOL" for a listener named otherwise), one each on a free port of the
broker's host.  For TLS listeners the broker gets certificates made at start (`Certificates`:
a CA, a server certificate for localhost / 127.0.0.1 / ::1 signed by it, and client
certificates on demand), written to a temporary directory removed when the broker stops.
On SASL listeners `users` (name -> password) can log in with every mechanism in `mechanisms` (by
default PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512): PLAIN's JAAS line lists them, and their SCRAM
credentials are created when the broker starts (as `kafka-storage format --add-scram` would),
unless they exist already. OAUTHBEARER uses Kafka's unsecured validator: a client logs in as any
principal it names (confluent-kafka's unsecured JWT, the Java client's unsecured login module).
`super_users` and `authorizer` set up ACLs.

Importing this module imports only the standard library; `cryptography` is imported when
certificates are made.
"""

from __future__ import annotations

import datetime
import ipaddress
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

STANDARD_AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
TLS_PROTOCOLS = ("SSL", "SASL_SSL")
SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")
DEFAULT_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
SCRAM_ITERATIONS = 4096
_LOGIN_MODULES = {
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "OAUTHBEARER": "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule",
}


def jaas_quote(value: str) -> str:
    """A JAAS option value in double quotes (Kafka's JaasConfig unescapes it)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class ScramUpsertion(NamedTuple):
    """What AlterUserScramCredentials carries for one user and mechanism."""

    name: str
    mechanism: int
    iterations: int
    salt: bytes
    salted_password: bytes



@dataclass(frozen=True)
class Security:
    """How an EmbeddedBroker is secured (`EmbeddedBroker(security=Security(...))`)."""

    #: one listener per entry, by security protocol or "NAME:PROTOCOL"; the first is the one
    #: `bootstrap_servers` and `client_config()` name unless told otherwise
    listeners: Sequence[str] = ("SSL",)
    #: ssl.client.auth of the TLS listeners: "none", "requested" or "required"
    client_auth: str = "none"
    #: ssl.principal.mapping.rules (None: Kafka's DEFAULT)
    principal_mapping_rules: str | None = None
    #: SASL users, name -> password (SASL listeners)
    users: Mapping[str, str] = field(default_factory=dict)
    #: SASL mechanisms enabled on the SASL listeners (sasl.enabled.mechanisms); empty: PLAIN
    #: and both SCRAMs
    mechanisms: Sequence[str] = ()
    #: super.users, as principals ("User:admin")
    super_users: Sequence[str] = ()
    #: whether ACLs are enforced (authorizer.class.name=StandardAuthorizer)
    authorizer: bool = False
    #: further broker properties, applied last
    properties: Mapping[str, str] = field(default_factory=dict)
    #: the CA and certificates to use (None: made afresh at each start, removed at stop)
    certificates: Certificates | None = None
    #: give the broker its key and trust stores as inline PEM values (ssl.keystore.key,
    #: ssl.keystore.certificate.chain, ssl.truststore.certificates) instead of files
    inline_pem: bool = False

    def listener_names(self) -> list[tuple[str, str]]:
        """(listener name, security protocol) of each listener, in order."""
        result = []
        for entry in self.listeners:
            name, _, protocol = entry.partition(":")
            result.append((name.upper(), (protocol or name).upper()))
        return result

    @property
    def uses_tls(self) -> bool:
        return any(protocol in TLS_PROTOCOLS for _, protocol in self.listener_names())

    @property
    def sasl_mechanisms(self) -> tuple[str, ...]:
        return tuple(self.mechanisms) or DEFAULT_MECHANISMS

    @property
    def uses_sasl(self) -> bool:
        return any(protocol in SASL_PROTOCOLS for _, protocol in self.listener_names())

    def broker_properties(self, host: str, certificates: Certificates | None) -> dict[str, str]:
        """The server.properties keys that set this up on `host` (port 0: any free port)."""
        names = self.listener_names()
        bracketed = f"[{host}]" if ":" in host else host
        props = {
            "listeners": ",".join(f"{name}://{bracketed}:0" for name, _ in names),
            "listener.security.protocol.map": ",".join(f"{name}:{protocol}" for name, protocol in names),
        }
        if certificates is not None:
            props.update({"ssl.keystore.type": "PEM", "ssl.truststore.type": "PEM",
                          "ssl.client.auth": self.client_auth})
            if self.inline_pem:
                key, chain = certificates.server_key_and_chain()
                props.update({"ssl.keystore.key": key, "ssl.keystore.certificate.chain": chain,
                              "ssl.truststore.certificates": certificates.ca_file.read_text()})
            else:
                props.update({"ssl.keystore.location": str(certificates.server_keystore),
                              "ssl.truststore.location": str(certificates.ca_file)})
            for name, protocol in names:
                if protocol == "SASL_SSL" and self.client_auth != "none":
                    props[f"listener.name.{name.lower()}.ssl.client.auth"] = self.client_auth
        if self.principal_mapping_rules is not None:
            props["ssl.principal.mapping.rules"] = self.principal_mapping_rules
        if self.uses_sasl:
            mechanisms = self.sasl_mechanisms
            props["sasl.enabled.mechanisms"] = ",".join(mechanisms)
            for name, protocol in names:
                if protocol not in SASL_PROTOCOLS:
                    continue
                prefix = f"listener.name.{name.lower()}"
                if "PLAIN" in mechanisms:
                    users = "".join(f" user_{user}={jaas_quote(password)}"
                                    for user, password in self.users.items())
                    props[f"{prefix}.plain.sasl.jaas.config"] = f"{_LOGIN_MODULES['PLAIN']} required{users};"
                if "OAUTHBEARER" in mechanisms:
                    props[f"{prefix}.oauthbearer.sasl.jaas.config"] = (
                        f"{_LOGIN_MODULES['OAUTHBEARER']} required;")
        if self.authorizer:
            props["authorizer.class.name"] = STANDARD_AUTHORIZER
        if self.super_users:
            props["super.users"] = ";".join(self.super_users)
        props.update(self.properties)
        return props

    def scram_upsertions(self, existing: Any = ()) -> list[ScramUpsertion]:
        """The SCRAM credentials of `users` to create, skipping (user, mechanism) in `existing`."""
        from akfak.security.scram import MECHANISMS, salted_password

        result = []
        if not self.uses_sasl:
            return result
        for mechanism in self.sasl_mechanisms:
            if mechanism not in MECHANISMS:
                continue
            for user, password in self.users.items():
                if (user, mechanism) in existing:
                    continue
                salt = secrets.token_bytes(32)
                result.append(ScramUpsertion(
                    user, MECHANISMS[mechanism][0], SCRAM_ITERATIONS, salt,
                    salted_password(mechanism, password, salt, SCRAM_ITERATIONS)))
        return result

    def client_properties(self, protocol: str, certificates: Certificates | None, *,
                          user: str | None = None, certificate: str | None = None,
                          java: bool = False, mechanism: str | None = None,
                          password: str | None = None) -> dict[str, str]:
        """Client settings for a listener of `protocol`, in librdkafka's names (confluent-kafka,
        kcat) or, with `java`, the Java client's.  `certificate` is the CN of a client
        certificate to present (made on first use); by default one ("client") is presented
        when the broker requires one.  For SASL, `user` logs in with `mechanism` (by default
        the first enabled) and `password` (by default the one in `users`)."""
        props = {"security.protocol": protocol}
        if protocol in TLS_PROTOCOLS:
            assert certificates is not None
            if certificate is None and self.client_auth == "required":
                certificate = "client"
            if java:
                props["ssl.truststore.type"] = "PEM"
                props["ssl.truststore.location"] = str(certificates.ca_file)
            else:
                props["ssl.ca.location"] = str(certificates.ca_file)
            if certificate is not None:
                cert_file, key_file = certificates.client(certificate)
                if java:
                    props["ssl.keystore.type"] = "PEM"
                    props["ssl.keystore.location"] = str(certificates.keystore_of(certificate))
                else:
                    props["ssl.certificate.location"] = str(cert_file)
                    props["ssl.key.location"] = str(key_file)
        if protocol in SASL_PROTOCOLS and user is not None:
            mechanism = mechanism or self.sasl_mechanisms[0]
            if password is None:
                password = self.users.get(user, "")
            props["sasl.mechanism"] = mechanism
            if java:
                if mechanism == "OAUTHBEARER":
                    options = f" unsecuredLoginStringClaim_sub={jaas_quote(user)}"
                else:
                    options = f" username={jaas_quote(user)} password={jaas_quote(password)}"
                props["sasl.jaas.config"] = f"{_LOGIN_MODULES[mechanism]} required{options};"
            elif mechanism == "OAUTHBEARER":
                props["enable.sasl.oauthbearer.unsecure.jwt"] = "true"
                props["sasl.oauthbearer.config"] = f"principal={user}"
            else:
                props["sasl.username"] = user
                props["sasl.password"] = password
        return props


def _name(common_name: str, organization: str = "akfak") -> Any:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    # most significant first, as DNs are encoded (their string forms start from the CN)
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "test"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


class Certificates:
    """A test CA and the certificates it signs, as PEM files under `directory`.

    - `ca_file`: the CA certificate (what clients trust; the broker's trust store)
    - `server_keystore`: the broker's key and certificate chain (ssl.keystore.type=PEM)
    - `client(cn)`: (certificate file, key file) of a client certificate for CN=cn,OU=test,O=akfak
      (DN "CN=cn,OU=test,O=akfak" as Kafka writes it), made on first use
    """

    def __init__(self, directory: str | Path, *, ca_name: str = "akfak test CA",
                 hosts: Sequence[str] = ("localhost", "127.0.0.1", "::1")):
        from cryptography.hazmat.primitives.asymmetric import ec

        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._ca_key = ec.generate_private_key(ec.SECP256R1())
        self._ca_cert = self._sign(_name(ca_name), self._ca_key.public_key(), ca=True, hosts=())
        self.ca_file = self.directory / "ca.pem"
        self.ca_file.write_bytes(_pem(self._ca_cert))
        self.server_keystore = self.directory / "server.pem"
        self._write_keystore(self.server_keystore, "broker", hosts)
        self._clients: dict[str, tuple[Path, Path]] = {}

    def client(self, common_name: str) -> tuple[Path, Path]:
        """The certificate and key files of the client certificate for `common_name`."""
        if common_name not in self._clients:
            cert_file = self.directory / f"client-{_safe(common_name)}.pem"
            key_file = self.directory / f"client-{_safe(common_name)}.key"
            key, cert = self._issue(common_name, ())
            cert_file.write_bytes(_pem(cert))
            key_file.write_bytes(_pem_key(key))
            self._clients[common_name] = (cert_file, key_file)
        return self._clients[common_name]

    def keystore_of(self, common_name: str) -> Path:
        """A PEM key store (key, then certificate) of the client certificate for `common_name`."""
        path = self.directory / f"client-{_safe(common_name)}.keystore.pem"
        if not path.exists():
            cert_file, key_file = self.client(common_name)
            path.write_bytes(key_file.read_bytes() + cert_file.read_bytes())
        return path

    def server_key_and_chain(self) -> tuple[str, str]:
        """The broker's private key and certificate chain, as PEM text."""
        text = self.server_keystore.read_text()
        end = text.index("-----END PRIVATE KEY-----") + len("-----END PRIVATE KEY-----\n")
        return text[:end], text[end:]

    @staticmethod
    def dn(common_name: str) -> str:
        """The DN of a client certificate as Kafka (ssl.principal.mapping.rules) sees it."""
        return f"CN={common_name},OU=test,O=akfak"

    def _write_keystore(self, path: Path, common_name: str, hosts: Sequence[str]) -> None:
        key, cert = self._issue(common_name, hosts)
        path.write_bytes(_pem_key(key) + _pem(cert) + _pem(self._ca_cert))

    def _issue(self, common_name: str, hosts: Sequence[str]) -> tuple[Any, Any]:
        from cryptography.hazmat.primitives.asymmetric import ec

        key = ec.generate_private_key(ec.SECP256R1())
        return key, self._sign(_name(common_name), key.public_key(), ca=False, hosts=hosts)

    def _sign(self, subject: Any, public_key: Any, *, ca: bool, hosts: Sequence[str]) -> Any:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.x509.oid import ExtendedKeyUsageOID

        now = datetime.datetime.now(datetime.UTC)
        issuer = subject if ca else self._ca_cert.subject
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
                   .public_key(public_key).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(hours=1))
                   .not_valid_after(now + datetime.timedelta(days=30))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False))
        if ca:
            builder = builder.add_extension(x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                encipher_only=False, decipher_only=False), critical=True)
        else:
            builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self._ca_key.public_key()), critical=False)
            builder = builder.add_extension(x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            if hosts:
                builder = builder.add_extension(x509.SubjectAlternativeName(
                    [_general_name(h) for h in hosts]), critical=False)
        return builder.sign(self._ca_key, hashes.SHA256())


def _general_name(host: str) -> Any:
    from cryptography import x509

    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _pem(cert: Any) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    return cert.public_bytes(Encoding.PEM)


def _pem_key(key: Any) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
