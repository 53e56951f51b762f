"""hyphal.control.xds."""
