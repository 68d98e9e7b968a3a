#!/bin/sh
# Record what is inside the image: every package and version, cloud-init and kernel versions.
set -eu
python3 - <<'PY' > /tmp/golden-guest-manifest.json
import json, subprocess
out = subprocess.run(["dpkg-query", "-W", "-f=${Package}\t${Version}\t${db:Status-Abbrev}\n"],
                     stdout=subprocess.PIPE, universal_newlines=True, check=True).stdout
packages = {}
for line in out.splitlines():
    name, version, status = line.split("\t")
    if status.startswith("ii"):
        packages[name] = version
ci = subprocess.run(["cloud-init", "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                    universal_newlines=True).stdout.strip()
kernels = sorted(n for n in packages if n.startswith("linux-image-") and packages[n])
print(json.dumps({"packages": packages, "cloud_init": ci.split()[-1] if ci else None,
                  "kernels": kernels, "os_release": open("/etc/os-release").read()}, indent=1))
PY
echo "golden: manifest collected"
