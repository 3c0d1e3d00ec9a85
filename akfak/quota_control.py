"""Client quota configuration as Kafka's ClientQuotaControlManager and ClientQuotasImage hold it.

- An entity is a set of (entity type, name) pairs, a None name being that type's default:
  `user`, `client-id`, `user`+`client-id`, or `ip` alone. Here it is the pairs sorted by type.
- AlterClientQuotas, per entry: an empty entity, another type, an empty name, `ip` combined
  with the others, an IP that does not resolve, a key the entity's type does not have, a
  value <= 0, or a fractional value for an integral key are INVALID_REQUEST with Kafka's
  message, and nothing of that entry is written; a key set twice in one entry, or a second
  entry for an entity, is "Ignoring duplicate entity ...". A type named twice keeps its last
  name (the request becomes a map). Setting a key to its current value and removing one that
  is not set write nothing.
- DescribeClientQuotas filters by components: exact name, default (null), or any name of a
  type; `strict` wants entities with exactly the filtered types. Bad filters are the
  top-level INVALID_REQUEST (UNSUPPORTED_VERSION for an unknown entity type), as Kafka.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from akfak.log.metadata_records import ClientQuotaRecord, MetadataRecord, QuotaEntityData

USER, CLIENT_ID, IP = "user", "client-id", "ip"
#: Entity (type, name) pairs, sorted by type.
Entity = tuple[tuple[str, str | None], ...]
NONE, INVALID_REQUEST, UNSUPPORTED_VERSION = 0, 42, 35
#: QuotaConfig's keys: user/client-id ones, and the IP one, with their ConfigDef types.
CLIENT_KEYS = {"producer_byte_rate": "long", "consumer_byte_rate": "long",
               "request_percentage": "double", "controller_mutation_rate": "double"}
IP_KEYS = {"connection_creation_rate": "int"}
_LIMITS = {"short": (2**15 - 1, "a SHORT"), "int": (2**31 - 1, "an INT"),
           "long": (2**63 - 1, "a LONG")}
MATCH_EXACT, MATCH_DEFAULT, MATCH_SPECIFIED = 0, 1, 2

Result = tuple[int, str | None]


class InvalidFilter(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def entity_string(pairs: Iterable[tuple[str, str | None]]) -> str:
    """As Kafka's ClientQuotaEntity.toString (a Java map's rendering)."""
    inner = ", ".join(f"{t}={n}" for t, n in pairs)
    return f"ClientQuotaEntity(entries={{{inner}}})"


def _resolves(host: str | None) -> bool:
    if host is None:
        return True
    try:
        socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return False
    return True


def _validate_entity(pairs: Sequence[tuple[str, str | None]]) -> tuple[Result, dict[str, str]]:
    if not pairs:
        return (INVALID_REQUEST, "Invalid empty client quota entity"), {}
    # AlterClientQuotasRequest.entries() makes a map first: a repeated type keeps its last name
    entity = dict(pairs)
    for etype, name in entity.items():
        if etype not in (USER, CLIENT_ID, IP):
            return (INVALID_REQUEST, f"Unhandled client quota entity type: {etype}"), {}
        if name is not None and not name:
            return (INVALID_REQUEST, f"Empty {etype} not supported"), {}
    if IP in entity:
        if USER in entity or CLIENT_ID in entity:
            return (INVALID_REQUEST, "Invalid quota entity combination, IP entity should"
                                     "not be combined with User or ClientId"), {}
        if not _resolves(entity[IP]):
            return (INVALID_REQUEST, f"{entity[IP]} is not a valid IP or resolvable host."), {}
        return (NONE, None), IP_KEYS
    return (NONE, None), CLIENT_KEYS


def _validate_value(keys: Mapping[str, str], key: str, value: float) -> Result:
    kind = keys.get(key)
    if kind is None:
        return INVALID_REQUEST, f"Invalid configuration key {key}"
    if value <= 0.0:
        return INVALID_REQUEST, f"Quota {key} must be greater than 0"
    if kind in _LIMITS:
        limit, name = _LIMITS[kind]
        if value > limit:
            return INVALID_REQUEST, f"Proposed value for {key} is too large for {name}."
        if abs(value % 1.0) > 1e-6:
            return INVALID_REQUEST, f"{key} cannot be a fractional value."
    return NONE, None


def alter_quotas(current: Mapping[Entity, Mapping[str, float]], entries: Sequence[Any]
                 ) -> tuple[list[MetadataRecord], list[Result]]:
    """The records to write and a (code, message) per request entry (kio EntryData)."""
    records: list[MetadataRecord] = []
    results: list[Result] = []
    seen: dict[Entity, int] = {}
    for entry in entries:
        pairs = [(e.entity_type, e.entity_name) for e in entry.entity]
        entity: Entity = tuple(sorted(dict(pairs).items(), key=lambda p: p[0]))
        ops: dict[str, float | None] = {}
        duplicate_key = False
        for op in entry.ops:
            duplicate_key = duplicate_key or op.key in ops
            ops[op.key] = None if op.remove else float(op.value)
        # As Kafka: a repeated key, or a second entry for an entity, ends with this message
        # (the key's own "Duplicate quota key" error is overwritten by it).
        ignoring = (INVALID_REQUEST, f"Ignoring duplicate entity {entity_string(dict(pairs).items())}")
        if entity in seen:
            results[seen[entity]] = ignoring
            results.append(ignoring)
            continue
        seen[entity] = len(results)
        if duplicate_key:
            results.append(ignoring)
            continue
        result, keys = _validate_entity(pairs)
        if result[0] == NONE:
            result, new = _entity_records(entity, keys, ops, current.get(entity, {}))
            if result[0] == NONE:
                records.extend(new)
        results.append(result)
    return records, results


def _entity_records(entity: Entity, keys: Mapping[str, str], ops: Mapping[str, float | None],
                    quotas: Mapping[str, float]) -> tuple[Result, list[MetadataRecord]]:
    new: list[MetadataRecord] = []

    def data() -> list[QuotaEntityData]:
        return [QuotaEntityData(t, n) for t, n in entity]

    for key, value in ops.items():
        if value is None:
            if key in quotas:
                new.append(ClientQuotaRecord(data(), key, remove=True))
            continue
        error = _validate_value(keys, key, value)
        if error[0] != NONE:
            return error, []
        if quotas.get(key) != value:
            new.append(ClientQuotaRecord(data(), key, value))
    return (NONE, None), new


def describe(quotas: Mapping[Entity, Mapping[str, float]], components: Sequence[Any],
             strict: bool) -> list[tuple[Entity, Mapping[str, float]]]:
    """The entities a DescribeClientQuotas filter matches; raises InvalidFilter."""
    exact: dict[str, str | None] = {}
    typed: set[str] = set()
    for c in components:
        etype = c.entity_type
        if not etype:
            raise InvalidFilter(INVALID_REQUEST, "Invalid empty entity type.")
        if etype in exact or etype in typed:
            raise InvalidFilter(INVALID_REQUEST,
                                f"Entity type {etype} cannot appear more than once in the filter.")
        if etype not in (USER, CLIENT_ID, IP):
            raise InvalidFilter(UNSUPPORTED_VERSION, f"Unsupported entity type {etype}")
        match_type = int(c.match_type)
        if match_type == MATCH_EXACT:
            if c.match is None:
                raise InvalidFilter(INVALID_REQUEST, "Request specified MATCH_TYPE_EXACT, but set "
                                                     "match string to null.")
            exact[etype] = c.match
        elif match_type == MATCH_DEFAULT:
            if c.match is not None:
                raise InvalidFilter(INVALID_REQUEST, "Request specified MATCH_TYPE_DEFAULT, but "
                                                     "also specified a match string.")
            exact[etype] = None
        elif match_type == MATCH_SPECIFIED:
            if c.match is not None:
                raise InvalidFilter(INVALID_REQUEST, "Request specified MATCH_TYPE_SPECIFIED, but "
                                                     "also specified a match string.")
            typed.add(etype)
        else:
            raise InvalidFilter(INVALID_REQUEST, f"Unknown match type {match_type}")
    filtered = exact.keys() | typed
    if IP in filtered and filtered & {USER, CLIENT_ID}:
        raise InvalidFilter(INVALID_REQUEST, "Invalid entity filter component combination. IP "
                                             "filter component should not be used with user or "
                                             "clientId filter component.")
    found = []
    for entity, values in quotas.items():
        names = dict(entity)
        if strict and len(names) != len(filtered):
            continue
        if all(t in names and names[t] == n for t, n in exact.items()) and typed <= names.keys():
            found.append((entity, values))
    return found
