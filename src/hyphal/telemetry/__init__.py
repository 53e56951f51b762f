"""hyphal.telemetry."""
