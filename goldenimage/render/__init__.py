"""Render: cloud-init user-data and seed ISO, Packer templates, the first-boot bundle, cluster host data and
the safety checks on rendered output."""
