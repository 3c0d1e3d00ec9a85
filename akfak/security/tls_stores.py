"""Key and trust stores read from Kafka's `ssl.keystore.*` / `ssl.truststore.*` keys.

As Kafka's DefaultSslEngineFactory (createKeystore, createTruststore), with the same refusals:

- PKCS12 files (`ssl.*store.type=PKCS12`) with their password; the key's password is the
  store's (keytool writes PKCS12 so).
- JKS, Kafka's default type: a file in Java's old JKS format cannot be read here (no maintained
  Python library reads it; pyjks was last released in 2020), so akfak says to convert it
  (`keytool -importkeystore -deststoretype PKCS12`).  As Java 9+ does for a JKS-typed store,
  a PKCS12 file named with type JKS is read as PKCS12.
- PEM (`type=PEM`): a file holding the private key (PKCS#8, encrypted with `ssl.key.password`
  or not) and the certificate chain, or the same inline in `ssl.keystore.key` and
  `ssl.keystore.certificate.chain`; trust stores as a file of certificates or inline in
  `ssl.truststore.certificates`.  A PEM store takes no store password.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key, pkcs12

from akfak.config import ConfigError

PEM = "PEM"
JKS_MAGIC = b"\xfe\xed\xfe\xed"
#: A function reading one SSL key as it applies to the listener (None: not set).
Lookup = Callable[[str], str | None]


@dataclass(frozen=True)
class KeyMaterial:
    """The broker's private key and certificate chain (leaf first)."""

    key: object
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...] = ()


def load_keystore(get: Lookup) -> KeyMaterial | None:
    """The key store the listener's keys name, or None when none is configured."""
    kind = (get("ssl.keystore.type") or "JKS").strip().upper()
    path = get("ssl.keystore.location")
    password = get("ssl.keystore.password")
    key_password = get("ssl.key.password")
    inline_key = get("ssl.keystore.key")
    inline_chain = get("ssl.keystore.certificate.chain")
    if inline_key is not None:
        if kind != PEM:
            raise ConfigError(f"SSL private key can be specified only for PEM, but key store type is {kind}.")
        if inline_chain is None:
            raise ConfigError("SSL private key is specified, but certificate chain is not specified.")
        if path is not None:
            raise ConfigError("Both SSL key store location and separate private key are specified.")
        if password is not None:
            raise ConfigError("SSL key store password cannot be specified with PEM format, "
                              "only key password may be specified.")
        return _pem_keystore(inline_chain.encode(), inline_key.encode(), key_password, "ssl.keystore.key")
    if inline_chain is not None:
        raise ConfigError("SSL certificate chain is specified, but private key is not specified")
    if path is None:
        if password is not None:
            raise ConfigError("SSL key store is not specified, but key store password is specified.")
        return None
    if kind == PEM:
        if password is not None:
            raise ConfigError("SSL key store password cannot be specified with PEM format, "
                              "only key password may be specified")
        data = _read(path, "key store")
        return _pem_keystore(data, data, key_password, path)
    if password is None:
        raise ConfigError("SSL key store is specified, but key store password is not specified.")
    key, certificate, extra = _pkcs12(path, kind, password, "key store")
    if key is None or certificate is None:
        raise ConfigError(f"SSL key store {path} holds no private key with its certificate")
    return KeyMaterial(key, certificate, tuple(extra))


def load_truststore(get: Lookup) -> list[x509.Certificate] | None:
    """The certificates the listener trusts, or None when no trust store is configured."""
    kind = (get("ssl.truststore.type") or "JKS").strip().upper()
    path = get("ssl.truststore.location")
    password = get("ssl.truststore.password")
    inline = get("ssl.truststore.certificates")
    if inline is not None:
        if kind != PEM:
            raise ConfigError("SSL trust store certs can be specified only for PEM, but trust store type "
                              f"is {kind}.")
        if path is not None:
            raise ConfigError("Both SSL trust store location and separate trust certificates are specified.")
        if password is not None:
            raise ConfigError("SSL trust store password cannot be specified for PEM format.")
        return _pem_certificates(inline.encode(), "ssl.truststore.certificates")
    if path is None:
        if password is not None:
            raise ConfigError("SSL trust store is not specified, but trust store password is specified.")
        return None
    if kind == PEM:
        if password is not None:
            raise ConfigError("SSL trust store password cannot be specified for PEM format.")
        return _pem_certificates(_read(path, "trust store"), path)
    _key, certificate, extra = _pkcs12(path, kind, password, "trust store")
    certificates = ([certificate] if certificate is not None else []) + list(extra)
    if not certificates:
        raise ConfigError(f"SSL trust store {path} holds no certificate")
    return certificates


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read SSL {what} {path}: {e.strerror}") from None


def _pkcs12(path: str, kind: str, password: str | None, what: str) -> tuple[object, x509.Certificate | None,
                                                                            list[x509.Certificate]]:
    if kind not in ("PKCS12", "JKS"):
        raise ConfigError(f"SSL {what} type {kind} is not supported (PKCS12, JKS stored as PKCS12, or PEM)")
    data = _read(path, what)
    if data.startswith(JKS_MAGIC):
        raise ConfigError(f"SSL {what} {path} is in Java's JKS format, which akfak cannot read: convert it "
                          "with `keytool -importkeystore -srckeystore OLD -destkeystore NEW "
                          "-deststoretype PKCS12` and set its type to PKCS12")
    try:
        key, certificate, extra = pkcs12.load_key_and_certificates(
            data, password.encode() if password is not None else None)
    except ValueError as e:
        raise ConfigError(f"Failed to load SSL {what} {path} of type {kind}: {e}") from None
    return key, certificate, list(extra)


def _pem_certificates(data: bytes, where: str) -> list[x509.Certificate]:
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError as e:
        raise ConfigError(f"Invalid PEM certificates in {where}: {e}") from None
    if not certificates:
        raise ConfigError(f"At least one certificate expected in {where}, but none found")
    return certificates


def _pem_keystore(chain: bytes, key_data: bytes, key_password: str | None, where: str) -> KeyMaterial:
    certificates = _pem_certificates(chain, where)
    blocks = _pem_blocks(key_data, ("PRIVATE KEY", "ENCRYPTED PRIVATE KEY", "RSA PRIVATE KEY",
                                    "EC PRIVATE KEY"))
    if not blocks:
        raise ConfigError(f"Private key not provided in {where}")
    if len(blocks) > 1:
        raise ConfigError(f"Expected one private key in {where}, but found {len(blocks)}")
    try:
        key = load_pem_private_key(blocks[0], key_password.encode() if key_password is not None else None)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"Private key in {where} could not be loaded: {e}") from None
    return KeyMaterial(key, certificates[0], tuple(certificates[1:]))


def _pem_blocks(data: bytes, labels: tuple[str, ...]) -> list[bytes]:
    """The PEM blocks of `data` with one of `labels` (text around them is ignored, as Kafka's
    PemParser ignores it)."""
    blocks = []
    for label in labels:
        begin, end = f"-----BEGIN {label}-----".encode(), f"-----END {label}-----".encode()
        start = data.find(begin)
        while start >= 0:
            stop = data.find(end, start)
            if stop < 0:
                break
            blocks.append(data[start:stop + len(end)] + b"\n")
            start = data.find(begin, stop)
    return blocks
