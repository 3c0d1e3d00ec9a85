"""ApiVersions (key 18), v0-v4.

Behaviour:
- Lists exactly what the handler registry holds.
- A version above the highest supported is answered, not refused: error 35
  UNSUPPORTED_VERSION in a v0 body that still lists the supported APIs (KIP-511),
  so the client retries with a version we know.
- v3+ requests name the client software; names outside Kafka's pattern get
  INVALID_REQUEST, as Kafka answers.
- v3+ answers carry the features this broker supports (akfak.features.SUPPORTED) and the
  finalized levels of the metadata image, level-0 features left out, with the image's
  offset as the finalized-features epoch (clients keep the newest epoch they saw).
- The response header is v0 even for flexible versions (the protocol layer knows).
"""

from __future__ import annotations

import re
from typing import Any

from kio.schema.api_versions.v0.response import ApiVersion as ApiVersionV0
from kio.schema.api_versions.v0.response import ApiVersionsResponse as ApiVersionsResponseV0
from kio.schema.errors import ErrorCode
from kio.static.primitive import i16, i64

from akfak import features
from akfak.handlers.base import NO_THROTTLE, Handler, encode_entity
from akfak.handlers.registry import API_VERSIONS_KEY
from akfak.protocol import RequestContext

_SOFTWARE = re.compile(r"^[a-zA-Z0-9](?:[a-zA-Z0-9\-.]*[a-zA-Z0-9])?$")


class ApiVersionsHandler(Handler):
    api_key = API_VERSIONS_KEY
    min_version = 0
    max_version = 4

    def handle(self, request: Any, context: RequestContext) -> Any:
        version = context.api_version
        module = self.response_type(version)
        error = ErrorCode.none
        if version >= 3 and not (
            _SOFTWARE.match(request.client_software_name)
            and _SOFTWARE.match(request.client_software_version)
        ):
            error = ErrorCode.invalid_request
        schema = self.response_module(version)
        keys = () if error else self._api_keys(schema.ApiVersion)
        if version == 0:
            return module(error_code=error, api_keys=keys)
        if version < 3:
            return module(error_code=error, api_keys=keys, throttle_time=NO_THROTTLE)
        image = self.broker.image
        return module(
            error_code=error, api_keys=keys, throttle_time=NO_THROTTLE,
            supported_features=tuple(
                schema.SupportedFeatureKey(name=f.name, min_version=i16(f.min_level),
                                           max_version=i16(f.max_level))
                for f in features.SUPPORTED),
            finalized_features_epoch=i64(image.offset),
            finalized_features=tuple(
                schema.FinalizedFeatureKey(name=name, max_version_level=i16(level),
                                           min_version_level=i16(level))
                for name, level in features.finalized(image.features).items()),
            zk_migration_ready=False)

    def _api_keys(self, entry: Any) -> tuple[Any, ...]:
        registry = self.broker.registry
        return tuple(
            entry(api_key=i16(key), min_version=i16(lo), max_version=i16(hi))
            for key, lo, hi in registry.api_versions()
        )

    def unsupported_version_body(self) -> bytes:
        return encode_entity(
            ApiVersionsResponseV0(
                error_code=ErrorCode.unsupported_version, api_keys=self._api_keys(ApiVersionV0)
            )
        )


HANDLERS = (ApiVersionsHandler,)
