"""hyphal.config."""
