"""The embedded stack: PostgreSQL, Redis and anvil from packages, supervised in the foreground."""
