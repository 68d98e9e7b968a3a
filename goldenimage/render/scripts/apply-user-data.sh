#!/bin/sh
# For targets that boot without our NoCloud seed (a Proxmox clone): make the uploaded user-data this
# instance's seed and run cloud-init's stages again with it, as a first boot would.
#
# The clone still carries Proxmox's cloud-init drive while Packer provisions it (packer-plugin-proxmox
# removes that drive only after its provision step), and qemu-server writes it as a NoCloud `cidata` ISO
# with a user-data of its own. cloud-init 22.4's DataSourceNoCloud._get_data reads the seed directory
# first, then every device labelled `fs_label` (default cidata), and _merge_new_seed lets the device's
# user-data replace the directory's: the profile would be silently swapped for Proxmox's cloud-config.
# `fs_label: null` is the one setting that skips the device search ("if label is not None"), so a drop-in
# pins the datasource to NoCloud with no device for these runs only; it is removed on exit whatever
# happens, so the template's clones read their own Proxmox drive again. The seed has no network-config:
# cloud-init writes its fallback (DHCP on the first NIC), which the clones' own drive replaces.
#   GOLDEN_ROOT  a prefix for every path (tests run the script against a fake root); empty on a guest
# Packer logs in as soon as sshd answers, which is after cloud-init's network stage but while the clone's
# first boot may still run its config and final stages (cloud-config.service, cloud-final.service): those
# finish first, or `cloud-init clean` and the stages below would run beside them on the same instance.
set -eu
sudo cloud-init status --wait >/dev/null || true
root=${GOLDEN_ROOT:-}
seed=$root/var/lib/cloud/seed/nocloud
pin=$root/etc/cloud/cloud.cfg.d/99-golden-bake-seed.cfg
trap 'sudo rm -f "$pin"' EXIT
sudo install -d -m 0700 "$seed"
sudo install -m 0600 "$root/tmp/golden-user-data" "$seed/user-data"
printf 'instance-id: golden-bake-%s\n' "$(cat /proc/sys/kernel/random/uuid)" | sudo tee "$seed/meta-data" >/dev/null
rm -f "$root/tmp/golden-user-data"
sudo install -d -m 0755 "$(dirname "$pin")"
sudo tee "$pin" >/dev/null <<'EOF'
# goldenimage bake: the profile's seed directory only, never an attached cidata drive (removed after the bake)
datasource_list: [NoCloud]
datasource:
  NoCloud:
    fs_label: null
EOF
sudo cloud-init clean --logs
sudo cloud-init init --local
sudo cloud-init init
sudo cloud-init modules --mode=config
sudo cloud-init modules --mode=final
