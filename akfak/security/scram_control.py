"""AlterUserScramCredentials as Kafka's ScramControlManager validates and records it.

- Deletions first, then upsertions; a user named twice in one request (in either list) gets
  DUPLICATE_RESOURCE "A user credential cannot be altered twice in the same request" and no change.
- An empty name is UNACCEPTABLE_CREDENTIAL "Username must not be empty"; a mechanism other than
  1 (SCRAM-SHA-256) or 2 (SCRAM-SHA-512) UNSUPPORTED_SASL_MECHANISM "Unknown SCRAM mechanism";
  iterations below 4096 or above 16384 UNACCEPTABLE_CREDENTIAL "Too few / Too many iterations";
  deleting a credential that does not exist RESOURCE_NOT_FOUND.
- An upsertion's salted password becomes StoredKey and ServerKey in a UserScramCredentialRecord;
  a deletion is a RemoveUserScramCredentialRecord. Results list the deletions, the upsertions,
  then the failures, as Kafka's response does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from akfak.log.metadata_records import (
    MetadataRecord,
    RemoveUserScramCredentialRecord,
    UserScramCredentialRecord,
)
from akfak.security.scram import (
    BY_TYPE,
    MAX_ITERATIONS,
    MIN_ITERATIONS,
    ScramCredential,
    credential_from_salted,
)

NONE, RESOURCE_NOT_FOUND, DUPLICATE_RESOURCE, UNACCEPTABLE_CREDENTIAL = 0, 91, 92, 93
UNSUPPORTED_SASL_MECHANISM, UNSUPPORTED_VERSION = 33, 35
DUPLICATE = "A user credential cannot be altered twice in the same request"
#: MetadataVersion.IBP_3_5_IV2, the first with SCRAM records
MV_SCRAM = 11

Result = tuple[str, int, str | None]


def _validate_name(name: str, mechanism: int) -> tuple[int, str] | None:
    if not name:
        return UNACCEPTABLE_CREDENTIAL, "Username must not be empty"
    if mechanism not in BY_TYPE:
        return UNSUPPORTED_SASL_MECHANISM, "Unknown SCRAM mechanism"
    return None


def alter_credentials(current: Mapping[tuple[str, str], ScramCredential], deletions: Sequence[Any],
                      upsertions: Sequence[Any], metadata_version: int
                      ) -> tuple[list[MetadataRecord], list[Result]]:
    """The records to write and the per-user results, for a request's deletions and upsertions
    (items with name, mechanism, and for upsertions iterations, salt, salted_password)."""
    supported = metadata_version >= MV_SCRAM
    errors: dict[str, tuple[int, str]] = {}
    to_delete: dict[str, Any] = {}
    to_upsert: dict[str, Any] = {}
    for d in deletions:
        if d.name in errors:
            continue
        if to_delete.pop(d.name, None) is not None:
            errors[d.name] = (DUPLICATE_RESOURCE, DUPLICATE)
        elif not supported:
            errors[d.name] = (UNSUPPORTED_VERSION, "The current metadata.version does not support SCRAM")
        elif (error := _validate_name(d.name, int(d.mechanism))) is not None:
            errors[d.name] = error
        elif (d.name, BY_TYPE[int(d.mechanism)]) not in current:
            errors[d.name] = (RESOURCE_NOT_FOUND, "Attempt to delete a user credential that does not exist")
        else:
            to_delete[d.name] = d
    for u in upsertions:
        if u.name in errors:
            continue
        if to_delete.pop(u.name, None) is not None or to_upsert.pop(u.name, None) is not None:
            errors[u.name] = (DUPLICATE_RESOURCE, DUPLICATE)
        elif not supported:
            errors[u.name] = (UNSUPPORTED_VERSION, "The current metadata.version does not support SCRAM")
        elif (error := _validate_name(u.name, int(u.mechanism))) is not None:
            errors[u.name] = error
        elif u.iterations < MIN_ITERATIONS:
            errors[u.name] = (UNACCEPTABLE_CREDENTIAL, "Too few iterations")
        elif u.iterations > MAX_ITERATIONS:
            errors[u.name] = (UNACCEPTABLE_CREDENTIAL, "Too many iterations")
        else:
            to_upsert[u.name] = u
    records: list[MetadataRecord] = []
    results: list[Result] = []
    for d in to_delete.values():
        records.append(RemoveUserScramCredentialRecord(d.name, int(d.mechanism)))
        results.append((d.name, NONE, None))
    for u in to_upsert.values():
        mechanism = BY_TYPE[int(u.mechanism)]
        credential = credential_from_salted(mechanism, bytes(u.salt), bytes(u.salted_password),
                                            int(u.iterations))
        records.append(UserScramCredentialRecord(u.name, int(u.mechanism), credential.salt,
                                                 credential.stored_key, credential.server_key,
                                                 credential.iterations))
        results.append((u.name, NONE, None))
    results.extend((name, code, message) for name, (code, message) in errors.items())
    return records, results
