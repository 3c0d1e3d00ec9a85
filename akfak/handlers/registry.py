"""The handler registry: which APIs and versions this broker answers.

It is the single source of truth for ApiVersions (which lists every handler but those
marked `advertised = False`, APIs Kafka answers without listing them).  Handlers are found by
importing every module of the `akfak.handlers` package and instantiating the
classes each lists in its `HANDLERS` tuple, so adding an API is adding a module.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from zope.interface.verify import verifyObject

from akfak.interfaces import IRequestHandler

if TYPE_CHECKING:
    from akfak.broker import Broker

API_VERSIONS_KEY = 18


class HandlerRegistry:
    def __init__(self, handlers: Iterable[Any]):
        self._by_key: dict[int, Any] = {}
        for handler in handlers:
            verifyObject(IRequestHandler, handler)
            if handler.api_key in self._by_key:
                raise ValueError(f"two handlers for API key {handler.api_key}")
            self._by_key[handler.api_key] = handler

    @classmethod
    def discover(cls, broker: Broker) -> HandlerRegistry:
        import akfak.handlers as package

        handlers = []
        for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            handlers.extend(handler_class(broker) for handler_class in getattr(module, "HANDLERS", ()))
        return cls(handlers)

    def get(self, api_key: int) -> Any | None:
        return self._by_key.get(api_key)

    def is_flexible(self, api_key: int, version: int) -> bool:
        handler = self._by_key.get(api_key)
        return handler is not None and handler.is_flexible(version)

    def api_versions(self) -> list[tuple[int, int, int]]:
        """(api key, min version, max version) for every advertised API, by key."""
        return sorted((h.api_key, h.min_version, h.max_version) for h in self._by_key.values()
                      if getattr(h, "advertised", True))
