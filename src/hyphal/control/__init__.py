"""hyphal.control."""
