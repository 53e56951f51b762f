"""Tests for hyphal.proxy.resilience (pure cores, plus the asyncio health prober)."""
