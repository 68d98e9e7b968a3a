"""Rolling upgrades and reboots of a running cluster (README: Channels and upgrades)."""
