#!/bin/sh
# The last provisioner of the proxmox and openstack bakes: remove the build account, its sudo rule and its
# key. Their builders stop the machine through their API (packer-plugin-proxmox stepStopVM/ShutdownVm, or
# StopVm in older releases; packer-plugin-openstack StepStopServer) and never run a shutdown_command, so
# this is the last command that logs in: Packer opens no session after it (skip_clean; the script removes
# itself) and nothing here needs the account once it is gone. The qemu target does the same in its
# shutdown_command. Runs as root (sudo); sync, because an API stop may be a hard one.
#   GOLDEN_BUILD_USER  the account to remove
#   GOLDEN_ROOT        a prefix for the files edited (tests); empty on a guest
set -eu
user=${GOLDEN_BUILD_USER:?}
root=${GOLDEN_ROOT:-}
rm -f -- "$0"
if getent passwd "$user" >/dev/null; then
  # -f: the account is the one logged in right now, running this script.
  userdel -rf "$user" 2>/dev/null || userdel -f "$user"
fi
# cloud-init writes every user's rule into one file: keep the profile's users' rules, drop the build one.
rules=$root/etc/sudoers.d/90-cloud-init-users
if [ -e "$rules" ]; then
  sed -i "/^# User rules for $user\$/d; /^$user[[:space:]]/d" "$rules"
  grep -q '^[^#[:space:]]' "$rules" || rm -f "$rules"
fi
rm -rf "$root/home/$user"
# disable_root: cloud-init also put every user's keys into root's, behind a "login as USER" command: the build
# key's line goes with its account.
keys=$root/root/.ssh/authorized_keys
if [ -e "$keys" ]; then
  sed -i "/Please login as the user .*$user.* rather than the user/d" "$keys"
fi
sync
echo "golden: build account $user removed"
