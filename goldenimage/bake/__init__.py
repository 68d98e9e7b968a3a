"""Bake: base images and disks, Packer runs, the accelerator, and the artifact store (images/)."""
