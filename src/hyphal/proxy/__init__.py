"""hyphal.proxy."""
