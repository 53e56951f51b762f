"""hyphal.control.ca."""
