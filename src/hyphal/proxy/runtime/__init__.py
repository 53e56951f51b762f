"""Compiled runtime tables: the per-request-ready form of one xDS snapshot."""

from hyphal.proxy.runtime.holder import ConfigHolder
from hyphal.proxy.runtime.tables import ProxyConfig

__all__ = ["ConfigHolder", "ProxyConfig"]
