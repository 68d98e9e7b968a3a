"""`golden publish IMAGE --to TARGET`: argument parsing only; the work is in the target modules."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.errors import InputError
from ..model.releases import release_help

if TYPE_CHECKING:
    from ..bake.store import Artifact

TARGETS = ("openstack", "ovh-dedicated", "proxmox", "s3")


def _s3(args: argparse.Namespace) -> Any:
    from ..publish.s3 import S3Publisher, S3Settings

    bucket = args.bucket or os.environ.get("GOLDEN_S3_BUCKET")
    if not bucket:
        raise InputError("--bucket is required for s3 and ovh-dedicated", hint="or set GOLDEN_S3_BUCKET")
    prefix = args.prefix if args.prefix.endswith("/") or not args.prefix else args.prefix + "/"
    return S3Publisher(S3Settings(bucket=bucket, prefix=prefix, endpoint_url=args.endpoint_url, region=args.region))


def check_arguments(args: argparse.Namespace) -> None:
    """Every argument checked before the artifact is read or anything connects (README: Errors in input)."""
    from ..publish import arguments as check

    if args.keep is not None and args.keep < 1:
        raise InputError("--keep must be 1 or more (the image just published always stays)")
    if args.to in ("s3", "ovh-dedicated"):
        check.check_endpoint_url(args.endpoint_url)
        check.check_region(args.region)
        check.check_presign(args.presign)
        bucket = args.bucket or os.environ.get("GOLDEN_S3_BUCKET")
        if bucket:
            check.check_bucket(bucket)
        check.check_one_line(args.prefix, "--prefix")
    if args.to == "ovh-dedicated":
        check.check_one_line(args.server, "--server")
        check.check_one_line(args.hostname, "--hostname")
    if args.to == "proxmox":
        check.check_proxmox_names(args.node or os.environ.get("PROXMOX_NODE"), args.storage, args.vm_storage,
                                  args.bridge)


def _cmd_publish(args: argparse.Namespace) -> int:
    from ..bake import store
    from ..publish.arguments import check_artifact
    from ..publish.publisher import publish

    check_arguments(args)
    # a dedicated server takes an image for metal: the newest of the profile, or the one named (refused if cloud)
    artifact = store.resolve(args.image, args.debian, kind="metal" if args.to == "ovh-dedicated" else "cloud")
    check_artifact(artifact)
    if args.to == "ovh-dedicated":
        return _ovh_dedicated(args, artifact)
    publisher: Any
    if args.to == "openstack":
        from ..publish.openstack import OpenStackPublisher, OpenStackSettings

        publisher = OpenStackPublisher(OpenStackSettings(cloud=args.os_cloud, min_ram_mb=args.min_ram,
                                                         visibility=args.visibility, uefi=args.uefi))
    elif args.to == "proxmox":
        from ..publish.proxmox import ProxmoxPublisher, ProxmoxSettings

        publisher = ProxmoxPublisher(ProxmoxSettings.from_env(
            node=args.node, storage=args.storage, vm_storage=args.vm_storage, bridge=args.bridge,
            memory_mb=args.memory, cores=args.cores, uefi=args.uefi or None))
    else:
        publisher = _s3(args)
    result = publish(publisher, artifact, args.keep)
    print(result.image.id)
    if args.to == "s3" and args.presign:
        print(publisher.presign(result.image, args.presign))
    return 0


def _ovh_dedicated(args: argparse.Namespace, artifact: Artifact) -> int:
    from ..publish.ovh import OvhDedicated, OvhSettings, deploy, require_metal

    require_metal(artifact)
    if not args.server:
        raise InputError("--server SERVICE_NAME is required for ovh-dedicated")
    if not args.yes:
        raise InputError(f"reinstalling {args.server} erases its disks", hint="add --yes to go ahead")
    from ..publish.arguments import checked_path

    ssh_key = (checked_path(args.ssh_key, "--ssh-key") or "").strip() or None
    checked_path(args.user_data, "--user-data", 1024 * 1024)  # a regular file of a sane size, before any call
    server = OvhDedicated(OvhSettings(server=args.server, user_data=args.user_data, hostname=args.hostname,
                                      ssh_key=ssh_key, url_ttl_s=args.presign or 6 * 3600,
                                      single_disk_ok=args.ovh_single_disk_ok, disk_group_id=args.ovh_disk_group))
    result, task = deploy(artifact, _s3(args), server, args.keep)
    print(result.image.id)
    print(f"{args.server}: reinstall task {task['taskId']} {task['status']}")
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `golden publish` on the `golden` command's subparsers."""
    p = subparsers.add_parser(
        "publish", help="upload an artifact to OpenStack (Glance), S3, an OVH dedicated server or Proxmox VE",
        description="Publish an artifact once per content key: a second publish uploads nothing and prints the "
                    "existing id. Credentials come from each tool's standard places (clouds.yaml/OS_*, the AWS "
                    "chain, OVH_*/ovh.conf, PROXMOX_URL/PROXMOX_TOKEN_ID/PROXMOX_TOKEN_SECRET).")
    p.add_argument("image", metavar="IMAGE", help="a profile (its newest artifact) or a path to an artifact's qcow2")
    p.add_argument("--to", required=True, choices=TARGETS, help="where to publish")
    p.add_argument("--debian", help=release_help("Debian release of the profile's artifact"))
    p.add_argument("--keep", type=int, metavar="N",
                   help="then remove all but the N newest images of the profile there (never one in use)")
    p.add_argument("--uefi", action="store_true",
                   help="openstack and proxmox: boot the image with UEFI on q35 (Proxmox: Secure Boot, with "
                        "Microsoft's keys pre-enrolled) instead of BIOS; OVH follows the server's boot mode")
    g = p.add_argument_group("openstack")
    g.add_argument("--os-cloud", default=os.environ.get("OS_CLOUD"), help="clouds.yaml entry (default $OS_CLOUD)")
    g.add_argument("--min-ram", type=int, default=512, metavar="MB", help="Glance min_ram (default 512)")
    g.add_argument("--visibility", default="private", choices=["private", "shared", "community", "public"])
    g = p.add_argument_group("s3 and ovh-dedicated")
    g.add_argument("--bucket", help="bucket (default $GOLDEN_S3_BUCKET)")
    g.add_argument("--prefix", default="goldenimage/", help="key prefix (default goldenimage/)")
    g.add_argument("--endpoint-url", default=os.environ.get("AWS_ENDPOINT_URL"),
                   help="S3 endpoint, e.g. https://s3.gra.io.cloud.ovh.net (default $AWS_ENDPOINT_URL)")
    g.add_argument("--region", help="S3 region requests are signed for (SigV4; default: boto3's, else the "
                                    "endpoint's, e.g. gra for s3.gra.io.cloud.ovh.net, else us-east-1)")
    g.add_argument("--presign", type=int, metavar="SECONDS", help="print a presigned GET URL valid this long")
    g = p.add_argument_group("ovh-dedicated")
    g.add_argument("--server", help="the dedicated server's serviceName")
    g.add_argument("--user-data", type=Path, help="the host's first-boot user-data (golden cluster render)")
    g.add_argument("--hostname", help="hostname given to the reinstalled server")
    g.add_argument("--ssh-key", type=Path, help="public key file for the server")
    g.add_argument("--ovh-disk-group", type=int, metavar="ID",
                   help="disk group BYOI writes to, on its first disk (default: the first the server lists)")
    g.add_argument("--ovh-single-disk-ok", action="store_true",
                   help="install on one disk of a multi-disk group without RAID controller")
    g.add_argument("--yes", action="store_true", help="confirm the reinstall (it erases the server)")
    g = p.add_argument_group("proxmox")
    g.add_argument("--node", help="PVE node (default $PROXMOX_NODE)")
    g.add_argument("--storage", help="storage with content type import for the upload (default local)")
    g.add_argument("--vm-storage", help="storage for the template's disks (default local-lvm)")
    g.add_argument("--bridge", help="bridge of the template's NIC (default vmbr0)")
    g.add_argument("--memory", type=int, metavar="MB", help="template memory (default 2048)")
    g.add_argument("--cores", type=int, help="template cores (default 2)")
    p.set_defaults(func=_cmd_publish)
    return p
