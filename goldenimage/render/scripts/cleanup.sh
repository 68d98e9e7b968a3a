#!/bin/sh
# Golden-image hygiene: everything that would make clones share an identity or leak the build.
# Runs as root at the end of every bake; the build user is removed after it (remove-build-account.sh, or
# the qemu target's shutdown command).
#   GOLDEN_SERVICES         services to stop first, so their files are quiet
#   GOLDEN_INSTANCE_UNIQUE  extra paths (globs) each clone must make for itself
#   GOLDEN_CLEAN_MACHINE_ID 1 when `cloud-init clean --machine-id` exists on this release
set -eu
echo "golden: cleanup"
for s in ${GOLDEN_SERVICES:-}; do systemctl stop "$s" 2>/dev/null || true; done

if [ "${GOLDEN_CLEAN_MACHINE_ID:-0}" = 1 ]; then
  cloud-init clean --logs --seed --machine-id
else
  cloud-init clean --logs --seed
fi
# An empty machine-id (not a missing one) makes systemd generate a new id at the next boot.
truncate -s 0 /etc/machine-id
rm -f /var/lib/dbus/machine-id

rm -f /etc/ssh/ssh_host_*
# The native bake's VM pass boots with first boot marked done, so that the agent leaves the build VM alone.
rm -f /var/lib/golden/firstboot.done /var/lib/golden/firstboot.json
# Unquoted on purpose: each is a glob. The schema allows no space or shell character in them, and no
# pattern wider than a file name in a directory two levels deep.
for p in ${GOLDEN_INSTANCE_UNIQUE:-}; do rm -rf -- $p; done

apt-get -y -q autoremove --purge >/dev/null || true
apt-get -q clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin

find /var/log -type f \( -name '*.gz' -o -name '*.[0-9]' -o -name '*.old' \) -delete
find /var/log -type f -exec truncate -s 0 {} +
rm -rf /var/log/journal/* /var/lib/cloud/instances/* 2>/dev/null || true
rm -f /root/.bash_history /home/*/.bash_history /root/.lesshst /root/.viminfo
rm -rf /tmp/* /tmp/.[!.]* /var/tmp/* /var/tmp/.[!.]* 2>/dev/null || true
rm -f /var/lib/systemd/random-seed /var/lib/urandom/random-seed /var/lib/systemd/credential.secret
# A shared DHCP lease or resolver state would follow every clone.
rm -f /var/lib/dhcp/*.leases /var/lib/NetworkManager/*.lease 2>/dev/null || true

sync
# Discard free blocks so the compressed image carries no deleted data.
fstrim -av || true
echo "golden: cleanup done"
