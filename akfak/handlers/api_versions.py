"""ApiVersions (key 18), v0-v4.

Behaviour:
- Lists exactly what the handler registry holds.
- A version above the highest supported is answered, not refused: error 35
  UNSUPPORTED_VERSION in a v0 body that still lists the supported APIs (KIP-511),
  so the client retries with a version we know.
- v3+ requests name the client software; names outside Kafka's pattern get
  INVALID_REQUEST, as Kafka answers.
- The response header is v0 even for flexible versions (the protocol layer knows).
"""

from __future__ import annotations

import re
from typing import Any

from kio.schema.api_versions.v0.response import ApiVersion as ApiVersionV0
from kio.schema.api_versions.v0.response import ApiVersionsResponse as ApiVersionsResponseV0
from kio.schema.errors import ErrorCode
from kio.static.primitive import i16

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
        keys = () if error else self._api_keys(self.response_module(version).ApiVersion)
        if version == 0:
            return module(error_code=error, api_keys=keys)
        return module(error_code=error, api_keys=keys, throttle_time=NO_THROTTLE)

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
