"""The NoCloud seed: an ISO 9660 image labelled "cidata" holding user-data, meta-data, network-config."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import pycdlib

#: cloud-init's NoCloud datasource looks for a filesystem with this label.
SEED_LABEL = "cidata"


def write_seed_iso(path: Path, user_data: str, meta_data: str, network_config: str | None = None,
                   vendor_data: str | None = None) -> Path:
    """Write a NoCloud seed ISO to `path` atomically (temporary name beside it, then rename)."""
    path = Path(path)
    files = {"user-data": user_data, "meta-data": meta_data}
    if network_config is not None:
        files["network-config"] = network_config
    if vendor_data is not None:
        files["vendor-data"] = vendor_data
    iso = pycdlib.PyCdlib()
    # Rock Ridge and Joliet carry the real lower-case, dashed names; the ISO 9660 names are 8.3 fallbacks
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=SEED_LABEL)
    try:
        for name, text in files.items():
            data = text.encode()
            iso_name = "/" + name.upper().replace("-", "_") + ".;1"
            iso.add_fp(io.BytesIO(data), len(data), iso_name, rr_name=name, joliet_path="/" + name)
        write_iso(iso, path)
    finally:
        iso.close()
    return path


def write_iso(iso: pycdlib.PyCdlib, path: Path) -> None:
    """Write an ISO built in memory to `path` whole or not at all (a temporary name, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            iso.write_fp(out)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
