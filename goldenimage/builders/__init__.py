"""Builders: base images, Packer templates per target, the Packer runner, KVM/TCG choice."""
