"""Verify: boot an artifact under QEMU, wait for SSH, run the testinfra suite."""
