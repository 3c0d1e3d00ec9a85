"""The principal of a TLS client: its certificate's subject DN, mapped by `ssl.principal.mapping.rules`.

As Kafka's DefaultKafkaPrincipalBuilder on an SSL listener: a client that sent no certificate is
User:ANONYMOUS; one that did is "User:" + the first rule's answer for the subject's DN, written
as Java's X500Principal.getName() writes it (RFC 2253: most specific RDN first, no spaces,
keywords CN, C, L, ST, O, OU, STREET, DC, UID, any other attribute as its OID and `#` + the hex
of its DER value).  Rules are SslPrincipalMapper's: `RULE:pattern/replacement/[LU]` (the
pattern must match the whole DN; `$1` in the replacement names a group; L or U lower or upper
cases the result) or `DEFAULT` (the DN unchanged), separated by commas, tried in order; a DN
no rule matches cannot authenticate (NoMatchingRule, the connection is closed).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID

from akfak.config import ConfigError

#: The attribute keywords Java's X500Principal writes by name in RFC 2253 form.
_KEYWORDS = {
    NameOID.COMMON_NAME: "CN",
    NameOID.COUNTRY_NAME: "C",
    NameOID.LOCALITY_NAME: "L",
    NameOID.STATE_OR_PROVINCE_NAME: "ST",
    NameOID.ORGANIZATION_NAME: "O",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
    NameOID.STREET_ADDRESS: "STREET",
    NameOID.DOMAIN_COMPONENT: "DC",
    NameOID.USER_ID: "UID",
}
#: Characters Java's AVA.toRFC2253String escapes with a backslash.
_ESCAPED = set(',=+<>#;"\\')

# SslPrincipalMapper's grammar, in Python's regex syntax (identical for these constructs).
_RULE = r"(DEFAULT)|RULE:((?:\\.|[^\\/])*)/((?:\\.|[^\\/])*)/([LU]?).*?|(.*?)"
_SPLITTER = re.compile(r"\s*(" + _RULE + r")\s*(?:,\s*|$)")
_PARSER = re.compile(_RULE)
_BACK_REFERENCE = re.compile(r"\$(\d+)")


class NoMatchingRule(Exception):
    """No ssl.principal.mapping.rules rule applies to a DN."""


def rfc2253(name: x509.Name) -> str:
    """The DN as Java's X500Principal.getName() gives it."""
    rdns = []
    for rdn in reversed(list(name.rdns)):
        rdns.append("+".join(_ava(attribute) for attribute in rdn))
    return ",".join(rdns)


def _ava(attribute: x509.NameAttribute) -> str:
    keyword = _KEYWORDS.get(attribute.oid)
    value = attribute.value
    if keyword is None or not isinstance(value, str):
        return f"{attribute.oid.dotted_string}=#{_der_value(attribute).hex()}"
    out = []
    for ch in value:
        out.append("\\" + ch if ch in _ESCAPED else ch)
    text = "".join(out)
    if text.startswith(" "):
        text = "\\" + text
    if text.endswith(" ") and not text.endswith("\\ "):
        text = text[:-1] + "\\ "
    return f"{keyword}={text}"


def _der_value(attribute: x509.NameAttribute) -> bytes:
    tag = attribute._type.value  # the value's ASN.1 universal tag, as the certificate had it
    value = attribute.value
    if isinstance(value, bytes):
        data = b"\x00" + value if tag == 3 else value  # a BIT STRING starts with its unused bits
    else:
        data = value.encode({30: "utf-16-be", 28: "utf-32-be"}.get(tag, "utf-8"))
    return bytes([tag]) + _der_length(len(data)) + data


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


@dataclass(frozen=True)
class _Rule:
    pattern: re.Pattern[str] | None  # None: DEFAULT
    replacement: str = ""
    case: str = ""  # "L", "U" or ""

    def apply(self, dn: str) -> str | None:
        if self.pattern is None:
            return dn
        match = self.pattern.fullmatch(dn)
        if match is None:
            return None
        result = self.pattern.sub(_python_replacement(self.replacement, self.pattern.groups), dn)
        if self.case == "L":
            return result.lower()
        if self.case == "U":
            return result.upper()
        return result


def _python_replacement(java: str, groups: int) -> str:
    """Java's Matcher replacement (`$n` a group, `\\x` a literal x) as Python's re.sub wants it.
    As Kafka (after NiFi): `$n` past the group count drops digits until it names a group, and
    one naming no group at all stays literal."""
    out: list[str] = []
    i = 0
    while i < len(java):
        ch = java[i]
        if ch == "\\" and i + 1 < len(java):
            out.append(java[i + 1].replace("\\", "\\\\"))
            i += 2
            continue
        m = _BACK_REFERENCE.match(java, i)
        if m is not None:
            digits = m.group(1)
            # Java reads the longest number of digits naming an existing group
            n = len(digits)
            while n > 1 and int(digits[:n]) > groups:
                n -= 1
            if int(digits[:n]) <= groups:
                out.append(f"\\g<{int(digits[:n])}>")
                out.append(digits[n:])
            else:
                out.append("$" + digits)
            i = m.end()
            continue
        out.append("\\\\" if ch == "\\" else ch)
        i += 1
    return "".join(out)


class SslPrincipalMapper:
    """`ssl.principal.mapping.rules`, parsed as Kafka parses them."""

    def __init__(self, rules: str | None):
        text = "DEFAULT" if rules is None else rules
        self.rules: list[_Rule] = []
        for rule in (m.group(1) for m in _SPLITTER.finditer(text.strip())):
            match = _PARSER.match(rule)
            if match is None or match.end() != len(rule):
                raise ConfigError(f"ssl.principal.mapping.rules: invalid rule {rule!r}")
            if match.group(1) is not None:
                self.rules.append(_Rule(None))
            elif match.group(2) is not None:
                try:
                    pattern = re.compile(match.group(2))
                except re.error as e:
                    raise ConfigError(f"ssl.principal.mapping.rules: bad pattern in {rule!r}: {e}") from None
                self.rules.append(_Rule(pattern, match.group(3), match.group(4)))
            elif match.group(5):
                raise ConfigError(f"ssl.principal.mapping.rules: invalid rule {rule!r}")
            # an empty rule is ignored, as Kafka does

    def name(self, dn: str) -> str:
        for rule in self.rules:
            result = rule.apply(dn)
            if result is not None:
                return result
        raise NoMatchingRule(f"No rules apply to {dn}")
