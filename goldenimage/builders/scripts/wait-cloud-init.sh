#!/bin/sh
# Wait for cloud-init to finish provisioning the profile; fail the bake with its log tail if it did not.
# GOLDEN_STATUS_OK: the exit codes of `cloud-init status --wait` that mean done (release quirk).
set -u
rc=0
sudo cloud-init status --wait >/dev/null || rc=$?
case " ${GOLDEN_STATUS_OK:-0} " in
  *" $rc "*) ;;
  *) echo "golden: cloud-init did not finish cleanly (status exit $rc)" >&2
     sudo cloud-init status --long >&2 || true
     sudo tail -n 60 /var/log/cloud-init-output.log >&2
     exit 1 ;;
esac
# `status` says done even when a module failed on some releases: the result file has the errors.
if ! sudo python3 - <<'PY'
import json, sys
errors = json.load(open("/run/cloud-init/result.json"))["v1"]["errors"]
for e in errors:
    print("golden: cloud-init error: %s" % e, file=sys.stderr)
sys.exit(1 if errors else 0)
PY
then
  sudo tail -n 60 /var/log/cloud-init-output.log >&2
  exit 1
fi
echo "golden: cloud-init finished"
