"""hyphal.control.translate: user resources + registry + node -> xDS resources (pure), and the
ADS server's snapshot source built on it."""

from hyphal.control.translate.consistency import check_consistency
from hyphal.control.translate.inputs import MeshIndex
from hyphal.control.translate.snapshot import translate

__all__ = ["MeshIndex", "check_consistency", "translate"]
