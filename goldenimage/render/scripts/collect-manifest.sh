#!/bin/sh
# Record what is inside the image: every package and version, cloud-init and kernel versions, and what
# dpkg installed or upgraded during this VM pass.
set -eu
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
kernels = sorted(n for n in packages if n.startswith("linux-image-") and packages[n])
print(json.dumps({"packages": packages, "cloud_init": ci.split()[-1] if ci else None,
                  "kernels": kernels, "vm_pass_dpkg": vm_pass, "os_release": open("/etc/os-release").read()}, indent=1))
PY
echo "golden: manifest collected"
