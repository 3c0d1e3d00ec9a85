"""Share sessions, as Kafka's ShareSessionCache keeps them.

A session is keyed by (group id, member id) and holds the partitions the member fetches.  A
ShareFetch with epoch 0 opens one (replacing an older one; acknowledgements are then an
INVALID_REQUEST), -1 closes it (SHARE_SESSION_NOT_FOUND without one), any other epoch must be
the session's next epoch (INVALID_SHARE_SESSION_EPOCH) and adds the partitions it names and
drops the forgotten ones.  ShareAcknowledge needs a session too, and moves its epoch the same
way (epoch 0 is INVALID_SHARE_SESSION_EPOCH).  At most `group.share.max.share.sessions`
sessions (SHARE_SESSION_LIMIT_REACHED); a session goes with the connection that opened it.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field

from kio.schema.errors import ErrorCode

INITIAL_EPOCH = 0
FINAL_EPOCH = -1

#: (topic id, partition)
SharePartitionRef = tuple[Hashable, int]


class SessionError(Exception):
    def __init__(self, error: ErrorCode) -> None:
        super().__init__(error.name)
        self.error = error


def next_epoch(epoch: int) -> int:
    if epoch < 0:
        return FINAL_EPOCH
    return 1 if epoch == 2**31 - 1 else epoch + 1


@dataclass(slots=True)
class ShareSession:
    group_id: str
    member_id: str
    connection: object
    #: the epoch the next request must carry
    epoch: int = 1
    partitions: dict[SharePartitionRef, None] = field(default_factory=dict)


class ShareSessionCache:
    def __init__(self, max_sessions: int) -> None:
        self.max_sessions = max_sessions
        self.sessions: dict[tuple[str, str], ShareSession] = {}

    def get(self, group_id: str, member_id: str) -> ShareSession | None:
        return self.sessions.get((group_id, member_id))

    def fetch_context(self, group_id: str, member_id: str, epoch: int,
                      wanted: Iterable[SharePartitionRef], forgotten: Iterable[SharePartitionRef],
                      has_acks: bool, connection: object) -> tuple[ShareSession, bool]:
        """The session a ShareFetch works in and whether it is a full (new) one; raises
        SessionError.  A final-epoch fetch gets its session (the caller closes it after)."""
        key = (group_id, member_id)
        if epoch == FINAL_EPOCH:
            session = self.sessions.get(key)
            if session is None:
                raise SessionError(ErrorCode.share_session_not_found)
            return session, False
        if epoch == INITIAL_EPOCH:
            if has_acks:
                raise SessionError(ErrorCode.invalid_request)
            self.sessions.pop(key, None)
            if len(self.sessions) >= self.max_sessions:
                raise SessionError(ErrorCode.share_session_limit_reached)
            session = ShareSession(group_id, member_id, connection,
                                   partitions=dict.fromkeys(wanted))
            self.sessions[key] = session
            return session, True
        session = self.sessions.get(key)
        if session is None:
            raise SessionError(ErrorCode.share_session_not_found)
        if session.epoch != epoch:
            raise SessionError(ErrorCode.invalid_share_session_epoch)
        for ref in wanted:
            session.partitions.setdefault(ref, None)
        for ref in forgotten:
            session.partitions.pop(ref, None)
        session.epoch = next_epoch(session.epoch)
        return session, False

    def acknowledge_context(self, group_id: str, member_id: str, epoch: int) -> ShareSession:
        if epoch == INITIAL_EPOCH:
            raise SessionError(ErrorCode.invalid_share_session_epoch)
        session = self.sessions.get((group_id, member_id))
        if session is None:
            raise SessionError(ErrorCode.share_session_not_found)
        if epoch != FINAL_EPOCH:
            if session.epoch != epoch:
                raise SessionError(ErrorCode.invalid_share_session_epoch)
            session.epoch = next_epoch(session.epoch)
        return session

    def remove(self, group_id: str, member_id: str) -> ShareSession | None:
        return self.sessions.pop((group_id, member_id), None)

    def of_connection(self, connection: object) -> list[ShareSession]:
        return [s for s in self.sessions.values() if s.connection is connection]
