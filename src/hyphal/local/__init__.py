"""hyphal.local: the `hyphal up` runner — run directory, ports, tokens, processes, supervisor."""
