"""hyphal.local."""
