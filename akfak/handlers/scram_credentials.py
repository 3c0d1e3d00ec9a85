"""DescribeUserScramCredentials (key 50) and AlterUserScramCredentials (key 51), v0.

Behaviour (Kafka 4's KafkaApis / ControllerApis, what `kafka-configs --entity-type users` and the
admin clients' describe/alter_user_scram_credentials get):
- Describe needs DESCRIBE on the cluster, else CLUSTER_AUTHORIZATION_FAILED at the top (and on
  one empty result per user asked). No users (null or empty) describes every user with a
  credential; a user without one is RESOURCE_NOT_FOUND "Attempt to describe a user credential
  that does not exist: <user>", a user asked twice DUPLICATE_RESOURCE. Each result lists the
  user's mechanisms with their iterations (never salts or keys).
- Alter needs ALTER on the cluster, else every user named gets CLUSTER_AUTHORIZATION_FAILED;
  otherwise akfak.security.scram_control validates and writes the changes to `__cluster_metadata`
  (UserScramCredentialRecord / RemoveUserScramCredentialRecord), answered once fsynced. A new
  credential is usable by the next SCRAM authentication; a deleted one refuses it.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode
from kio.static.primitive import i8, i32

from akfak.handlers.base import NO_THROTTLE, Handler
from akfak.protocol import RequestContext
from akfak.security.acls import ALTER, DESCRIBE
from akfak.security.checks import DENIED_MESSAGES, access
from akfak.security.scram import MECHANISMS

CLUSTER_DENIED = DENIED_MESSAGES[31]


class DescribeUserScramCredentialsHandler(Handler):
    api_key = 50
    min_version = 0
    max_version = 0

    def handle(self, request: Any, context: RequestContext) -> Any:
        module = self.response_module(context.api_version)
        response = self.response_type(context.api_version)
        result = module.DescribeUserScramCredentialsResult
        asked = [u.name for u in request.users or ()]
        if not access(context).cluster(DESCRIBE):
            return response(
                throttle_time=NO_THROTTLE, error_code=ErrorCode.cluster_authorization_failed,
                error_message=CLUSTER_DENIED, results=tuple(
                    result(user="", error_code=ErrorCode.cluster_authorization_failed,
                           error_message=CLUSTER_DENIED, credential_infos=()) for _ in asked))
        credentials = self.broker.image.scram_credentials
        if not asked:
            users = {name: False for name, _ in sorted(credentials)}
        else:
            users = {}
            for name in asked:
                users[name] = name in users
        results = []
        for name, duplicate in users.items():
            if duplicate:
                results.append(result(
                    user=name, error_code=ErrorCode.duplicate_resource, credential_infos=(),
                    error_message="Cannot describe SCRAM credentials for the same user twice in a "
                                  f"single request: {name}"))
                continue
            infos = tuple(module.CredentialInfo(mechanism=i8(code),
                                                iterations=i32(credentials[(name, mech)].iterations))
                          for mech, (code, _) in MECHANISMS.items() if (name, mech) in credentials)
            if infos:
                results.append(result(user=name, error_code=ErrorCode.none, error_message=None,
                                      credential_infos=infos))
            else:
                results.append(result(
                    user=name, error_code=ErrorCode.resource_not_found, credential_infos=(),
                    error_message=f"Attempt to describe a user credential that does not exist: {name}"))
        return response(throttle_time=NO_THROTTLE, error_code=ErrorCode.none, error_message=None,
                        results=tuple(results))


class AlterUserScramCredentialsHandler(Handler):
    api_key = 51
    min_version = 0
    max_version = 0

    def handle(self, request: Any, context: RequestContext) -> Any:
        module = self.response_module(context.api_version)
        response = self.response_type(context.api_version)

        def answer(results: list[tuple[str, int, str | None]]) -> Any:
            return response(throttle_time=NO_THROTTLE, results=tuple(
                module.AlterUserScramCredentialsResult(user=user, error_code=ErrorCode(code),
                                                       error_message=message)
                for user, code, message in results))

        if not access(context).cluster(ALTER):
            users = sorted({x.name for x in (*request.deletions, *request.upsertions)})
            return answer([(u, ErrorCode.cluster_authorization_failed.value, CLUSTER_DENIED)
                           for u in users])
        results = self.broker.controller.alter_scram_credentials(request.deletions,
                                                                 request.upsertions)
        return self.broker.controller.wait_durable().addCallback(lambda _: answer(results))


HANDLERS = (DescribeUserScramCredentialsHandler, AlterUserScramCredentialsHandler)
