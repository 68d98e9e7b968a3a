"""Clusters: one file describing hosts, profiles, addresses and secrets, rendered into each host's first-boot
data (`golden cluster render`). model: the file's schema; check: cross-host rules; secrets: where secrets
come from; render: host.json per role, user-data, meta-data, network-config and the seed ISO."""
