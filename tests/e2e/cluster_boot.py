"""Boot every host of a cluster file from its profile's image, on one private network the test builds (a switch on
127.0.0.1 between QEMU's unicast UDP links): the shared start of the cluster tests."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import yaml

from goldenimage.bake.pipeline import bake
from goldenimage.core.ssh_keys import ephemeral_keypair
from goldenimage.render.cluster import render_cluster
from goldenimage.verify.l2switch import L2Switch
from goldenimage.verify.vm import VM


@contextmanager
def booted_cluster(cluster: dict[str, Any], tmp: Path, *, release: int = 12, memory_mib: int = 768,
                   ssh_timeout: int = 900, forwards: Mapping[str, Sequence[str]] | None = None
                   ) -> Iterator[dict[str, VM]]:
    """The hosts of `cluster` (in its order, by name) booted and answering SSH; their first boot may still run.

    Each profile is baked once (a cache hit when its image exists); the cluster file gets a fresh key. `forwards`
    adds user-network options by host (hostfwd=tcp:127.0.0.1:PORT-:80: a guest port on the host's loopback)."""
    images = {profile: bake(profile, release) for profile in dict.fromkeys(h["profile"] for h in cluster["hosts"])}
    key = ephemeral_keypair(tmp)
    (tmp / "cluster.yaml").write_text(yaml.safe_dump({**cluster, "ssh_authorized_keys": [key.public]}))
    render_cluster(tmp / "cluster.yaml", tmp / "rendered")
    rendered = json.loads((tmp / "rendered" / "hosts.json").read_text())
    with L2Switch() as switch, ExitStack() as stack:
        vms: dict[str, VM] = {}
        for name in (h["name"] for h in cluster["hosts"]):
            host = rendered[name]
            vm = VM(images[host["profile"]].qcow2, seed=tmp / "rendered" / name / "seed.iso", key=key, name=name,
                    mac=host["uplink_mac"], extra_args=switch.netdev_args(host["mac"]), workdir=tmp / name,
                    cpus=1, memory_mib=memory_mib, netdev_options=(forwards or {}).get(name, ()))
            vms[name] = stack.enter_context(vm)
        for vm in vms.values():
            vm.wait_for_ssh(timeout=ssh_timeout)
        yield vms
