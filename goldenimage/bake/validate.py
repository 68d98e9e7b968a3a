"""What `golden validate` runs: render profiles and check every file with the real tools (packer, cloud-init)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import GoldenError
from ..core.fs import scratch
from ..core.run import require, run
from ..model.profiles import resolve, supported_releases
from ..model.releases import matrix
from ..render.packer_template import Target
from ..render.rendered_safety import check_template, check_user_data
from . import packer_cli
from .identity_stub import identity_stub
from .render_dir import Rendered, render

# Values the templates read from the environment, for validation only (no cloud is contacted).
VALIDATE_ENV = {
    "PROXMOX_PASSWORD": "validate-only-password",
    "PROXMOX_TOKEN_ID": "validate@pve!only",
    "PROXMOX_TOKEN_SECRET": "validate-only-secret",
    "OS_USERNAME": "validate-only-user",
    "OS_PASSWORD": "validate-only-password",
    "OS_PROJECT_NAME": "validate-only-project",
}


@dataclass(frozen=True)
class Check:
    """The verdict on one rendered file."""

    label: str
    ok: bool
    detail: str = ""

    def line(self) -> str:
        status = "ok  " if self.ok else "FAIL"
        first = self.detail.strip().splitlines()[0] if (self.detail.strip() and not self.ok) else ""
        return f"{status} {self.label}" + (f": {first}" if first else "")


def cloud_init_schema(path: Path) -> tuple[bool, str]:
    """`cloud-init schema --config-file PATH`: (ok, its message)."""
    proc = run(["cloud-init", "schema", "--config-file", path], check=False, timeout=120)
    return proc.returncode == 0, (proc.stderr or proc.stdout).strip()


def _check_packer(rendered: Rendered, target: Target, label: str, identity_url: str) -> Check:
    var_file = rendered.var_file
    if target is Target.OPENSTACK:
        values = {**rendered.values, "identity_endpoint": identity_url}
        var_file = var_file.with_name(var_file.stem + ".validate.json")
        var_file.write_text(json.dumps(values))
    ok, message = packer_cli.validate(rendered.template, var_file, env=VALIDATE_ENV)
    return Check(label, ok, message)


def input_safety(rendered: Rendered, label: str) -> Check:
    """Every input-derived value in the rendered user-data and template is one token, one line."""
    problems = check_user_data(rendered.user_data.read_text())
    problems += check_template(json.loads(rendered.template.read_text()))
    return Check(label, not problems, "\n".join(problems))


def check_profile(name: str, debian: int, targets: list[Target], identity_url: str,
                  overlays: tuple[Path, ...] = ()) -> list[Check]:
    """Render one profile for one release and every target; check each rendered file."""
    profile = resolve(name, debian, overlays)
    checks: list[Check] = []
    with scratch("golden-validate") as tmp:
        for i, target in enumerate(targets):
            out = Path(tmp) / target.value
            rendered = render(profile, target, out)
            prefix = f"{profile.name} debian{debian}"
            if i == 0:
                # user-data and the first-boot example do not depend on the target: check them once.
                for path in (rendered.user_data, rendered.firstboot_example):
                    ok, msg = cloud_init_schema(path)
                    checks.append(Check(f"{prefix} {path.name}", ok, msg))
                # The values from input are the same in every target's template: one look is enough.
                checks.append(input_safety(rendered, f"{prefix} input safety"))
            checks.append(_check_packer(rendered, target, f"{prefix} {rendered.template.name}", identity_url))
    return checks


def validate_all(names: list[str], releases: list[int] | None = None, targets: list[Target] | None = None,
                 overlays: tuple[Path, ...] = (), jobs: int = 4) -> Iterator[Check]:
    """Check every profile x release x target; yields one Check per file as results arrive."""
    require("packer", "cloud-init", purpose="to validate rendered templates and user-data")
    targets = targets or list(Target)
    combos = []
    for name in names:
        supported = supported_releases(name)
        for n in releases or [r.number for r in matrix()]:
            if releases or n in supported:
                # Resolve everything first: a bad profile fails before anything is rendered.
                resolve(name, n, overlays)
                combos.append((name, n))
    with identity_stub() as url, ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(check_profile, name, n, targets, url, overlays) for name, n in combos]
        for (name, n), future in zip(combos, futures, strict=True):
            try:
                yield from future.result()
            except GoldenError as exc:  # a render refused, or a Packer plugin that could not be installed
                yield Check(f"{name} debian{n}", False, str(exc))
