#!/bin/sh
# Wait for cloud-init to finish provisioning the profile; fail the bake with its log tail if it did not.
# The end of the final stage is marked by /run/cloud-init/result.json (`cloud-init status` can say
# "error" while the final stage is still installing packages). Bounded by GOLDEN_WAIT_SECONDS.
set -u
deadline=$(( $(date +%s) + ${GOLDEN_WAIT_SECONDS:-3600} ))
until sudo test -e /run/cloud-init/result.json; do
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "golden: cloud-init did not finish within ${GOLDEN_WAIT_SECONDS:-3600}s" >&2
    sudo cloud-init status --long >&2 || true
    sudo tail -n 60 /var/log/cloud-init-output.log >&2
    exit 1
  fi
  sleep 5
  n=$((${n:-0} + 1))
  # A progress line every 30 s: the latest thing cloud-init did.
  if [ $((n % 6)) -eq 0 ]; then
    echo "golden: cloud-init: $(sudo tail -n 1 /var/log/cloud-init-output.log | cut -c1-100)"
  fi
done
if ! sudo python3 - <<'PY'
import json, sys
errors = json.load(open("/run/cloud-init/result.json"))["v1"]["errors"]
for e in errors:
    print("golden: cloud-init error: %s" % e, file=sys.stderr)
sys.exit(1 if errors else 0)
PY
then
  sudo cloud-init status --long >&2 || true
  sudo tail -n 60 /var/log/cloud-init-output.log >&2
  exit 1
fi
echo "golden: cloud-init finished"
