"""hyphal.control.store."""
