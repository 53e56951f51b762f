"""ConfigHolder: the one reference to the live ProxyConfig, swapped atomically."""

from __future__ import annotations

from collections.abc import Callable

from hyphal.proxy.runtime.tables import ProxyConfig


class ConfigHolder:
    """Readers call `current` once per request and keep that snapshot for the whole request;
    writers call `swap`. Listeners are told through `subscribe` callbacks (sync, cheap)."""

    __slots__ = ("_config", "_listeners")

    def __init__(self, config: ProxyConfig | None = None) -> None:
        self._config = config if config is not None else ProxyConfig(version="")
        self._listeners: list[Callable[[ProxyConfig], None]] = []

    @property
    def current(self) -> ProxyConfig:
        return self._config

    def swap(self, config: ProxyConfig) -> ProxyConfig:
        """Install `config`; returns the previous snapshot."""
        previous = self._config
        self._config = config
        for callback in tuple(self._listeners):
            callback(config)
        return previous

    def subscribe(self, callback: Callable[[ProxyConfig], None]) -> None:
        self._listeners.append(callback)
