"""Arguments more than one command takes: a release of the matrix, and where a base image comes from."""

from __future__ import annotations

import argparse


def release_number(value: str) -> int:
    """A --debian value as a release number of the matrix; one-line InputError otherwise."""
    from ..model.releases import matrix

    return matrix().get(value).number


def add_base_options(p: argparse.ArgumentParser) -> None:
    """--debian, --mirror, --base-url, --base-checksum and --force, as `golden base` and `golden build` take them."""
    from ..model.releases import release_help

    p.add_argument("--debian", help=release_help())
    p.add_argument("--mirror", help="Debian mirror URL for the base image (default: the release's; $GOLDEN_MIRROR)")
    p.add_argument("--base-url", help="start from an official Debian cloud image at this URL instead")
    p.add_argument("--base-checksum", help="checksum of --base-url: sha256:HEX or sha512:HEX (required with it)")
    p.add_argument("--force", action="store_true", help="rebuild even if a cached result exists")
