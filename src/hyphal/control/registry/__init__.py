"""hyphal.control.registry."""
