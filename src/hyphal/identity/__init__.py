"""hyphal.identity."""
