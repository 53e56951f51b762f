"""hyphal.control.translate."""
