"""Cloud-init: user-data rendering and the NoCloud seed ISO. (Never importable as `cloudinit`.)"""
