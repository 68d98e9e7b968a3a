#!/bin/sh
# Record what is inside the image: every package and version, cloud-init and kernel versions, and what
# dpkg installed or upgraded during this VM pass, and the runcmd script cloud-init ran in it (root only: sudo).
set -eu
runcmd=${GOLDEN_RUNCMD:-/var/lib/cloud/instance/scripts/runcmd}
GOLDEN_RUNCMD_TEXT=$(sudo -n cat "$runcmd" 2>/dev/null || cat "$runcmd" 2>/dev/null || true)
export GOLDEN_RUNCMD_TEXT
python3 - <<'PY' > "${GOLDEN_GUEST_MANIFEST:-/tmp/golden-guest-manifest.json}"
import json, os, subprocess
out = subprocess.run(["dpkg-query", "-W", "-f=${Package}\t${Version}\t${db:Status-Abbrev}\n"],
                     stdout=subprocess.PIPE, universal_newlines=True, check=True).stdout
packages = {}
for line in out.splitlines():
    name, version, status = line.split("\t")
    if status.startswith("ii"):
        packages[name] = version
ci = subprocess.run(["cloud-init", "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                    universal_newlines=True).stdout.strip()
# The package layer's own install left dpkg's log empty: what it holds now is the VM pass's doing.
vm_pass = []
try:
    with open(os.environ.get("GOLDEN_DPKG_LOG", "/var/log/dpkg.log")) as log:
        for line in log:
            fields = line.split()
            if len(fields) >= 6 and fields[2] in ("install", "upgrade"):
                vm_pass.append(" ".join(fields[2:6]))
except IOError:
    pass
# The commands of cloud-init's runcmd script (its lines but the shebang), as this boot ran them.
runcmd = [line for line in os.environ.get("GOLDEN_RUNCMD_TEXT", "").splitlines()
          if line.strip() and not line.startswith("#!")]
kernels = sorted(n for n in packages if n.startswith("linux-image-") and packages[n])
print(json.dumps({"packages": packages, "cloud_init": ci.split()[-1] if ci else None,
                  "kernels": kernels, "vm_pass_dpkg": vm_pass, "runcmd": runcmd,
                  "os_release": open("/etc/os-release").read()}, indent=1))
PY
echo "golden: manifest collected"
