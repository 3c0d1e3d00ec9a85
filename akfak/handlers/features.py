"""UpdateFeatures (key 57) v0-v2.

Behaviour (Kafka 4.1's ControllerApis.handleUpdateFeatures and FeatureControlManager):
- All updates or none: the first update that cannot be made answers INVALID_UPDATE_VERSION
  with Kafka's message ("The update failed for all features since the following feature
  had an error: ...") and nothing is written; otherwise one FeatureLevelRecord per
  changed feature goes to `__cluster_metadata` as one batch.
- A level must lie in this broker's supported range (akfak.features.SUPPORTED); 0 removes
  a feature (not metadata.version). v0's `allow_downgrade` is upgrade type 2 (safe
  downgrade); v1+ name the type: 1 upgrade only, 2 safe, 3 unsafe downgrade. A
  metadata.version downgrade across a level whose records changed is refused.
- `validate_only` (v1+) checks without writing.
- v0-v1 answer a result per feature (all NONE on success, none on error, as Kafka's
  createWithErrors); v2 only the top-level error. The answer waits for the fsync.
- A feature named twice answers INVALID_REQUEST.
- ACLs: ALTER on the cluster, else CLUSTER_AUTHORIZATION_FAILED with no results.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from akfak import features
from akfak.errors import InvalidRequest, KafkaError
from akfak.handlers.base import NO_THROTTLE, Handler
from akfak.protocol import RequestContext
from akfak.security.acls import ALTER
from akfak.security.checks import DENIED_MESSAGES, access


class UpdateFeaturesHandler(Handler):
    api_key = 57
    min_version = 0
    max_version = 2

    def handle(self, request: Any, context: RequestContext) -> Any:
        version = context.api_version
        names = [u.feature for u in request.feature_updates]
        error: KafkaError | None = None
        if not access(context).cluster(ALTER):
            return self._response(version, ErrorCode.cluster_authorization_failed,
                                  DENIED_MESSAGES[31], ())
        if len(set(names)) != len(names):
            error = InvalidRequest("The request contains multiple updates to the same feature.")
        else:
            try:
                self.broker.controller.update_features(
                    {u.feature: (int(u.max_version_level), self._upgrade_type(u, version))
                     for u in request.feature_updates},
                    validate_only=version >= 1 and request.validate_only)
            except KafkaError as e:
                return self._response(
                    version, ErrorCode(e.error_code),
                    f"The update failed for all features since the following feature had an "
                    f"error: {e}", ())
        if error is not None:
            return self._response(version, ErrorCode(error.error_code), str(error), ())
        done = self.broker.controller.wait_durable()
        done.addCallback(lambda _: self._response(version, ErrorCode.none, None, names))
        return done

    @staticmethod
    def _upgrade_type(update: Any, version: int) -> int:
        if version == 0:
            return features.SAFE_DOWNGRADE if update.allow_downgrade else features.UPGRADE
        return int(update.upgrade_type)

    def _response(self, version: int, error: ErrorCode, message: str | None,
                  names: Any) -> Any:
        fields: dict[str, Any] = {"throttle_time": NO_THROTTLE, "error_code": error,
                                  "error_message": message}
        if version <= 1:
            result = self.response_module(version).UpdatableFeatureResult
            fields["results"] = tuple(result(feature=n, error_code=ErrorCode.none,
                                             error_message=None) for n in names)
        return self.response_type(version)(**fields)


HANDLERS = (UpdateFeaturesHandler,)
