#!/bin/sh
# For targets that boot without our NoCloud seed (a Proxmox clone): make the uploaded user-data this
# instance's seed and run cloud-init's stages again with it, as a first boot would.
set -eu
seed=/var/lib/cloud/seed/nocloud
sudo install -d -m 0700 "$seed"
sudo install -m 0600 /tmp/golden-user-data "$seed/user-data"
printf 'instance-id: golden-bake-%s\n' "$(cat /proc/sys/kernel/random/uuid)" | sudo tee "$seed/meta-data" >/dev/null
rm -f /tmp/golden-user-data
sudo cloud-init clean --logs
sudo cloud-init init --local
sudo cloud-init init
sudo cloud-init modules --mode=config
sudo cloud-init modules --mode=final
