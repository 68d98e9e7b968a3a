"""Publish targets: openstack, s3, ovh-dedicated, proxmox."""
