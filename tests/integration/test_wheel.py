"""The wheel works outside the checkout: built from a copy of the sources, installed into a fresh venv in a
temporary folder, and run from an empty folder elsewhere, it lists and renders profiles, validates one with
packer and cloud-init, renders a cluster, and takes the user's own profiles from --profiles-dir.

The fresh venv gets no copy of goldenimage's dependencies: a .pth file puts the test venv's site-packages
after its own (a .pth there is not processed, so the test venv's editable goldenimage stays out of reach;
the test checks that goldenimage comes from the wheel)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES, ROOT

pytestmark = pytest.mark.wheel

#: Never copied into the build: generated, cached or private to this checkout.
NOT_SOURCES = shutil.ignore_patterns(".git", ".venv", "images", "rendered", "build", "dist", "*.egg-info", "_data",
                                     "__pycache__", ".*_cache", ".hypothesis", ".cache", "*.qcow2", "*.iso")


def _run(argv: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], Path]:
    """(bin dir of the fresh venv, its environment, an empty working folder)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src, dist, venv, work = tmp / "src", tmp / "dist", tmp / "venv", tmp / "work"
    shutil.copytree(ROOT, src, ignore=NOT_SOURCES)
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOLDEN_", "PYTHON", "VIRTUAL_ENV"))}
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(src)], cwd=tmp, env=env)
    wheel = next(dist.glob("goldenimage-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for shipped in ("goldenimage/_data/profiles/web.yaml", "goldenimage/_data/profiles/releases.yaml",
                    "goldenimage/_data/profiles/roles/web.yaml",
                    "goldenimage/_data/firstboot/golden_firstboot/agent.py",
                    "goldenimage/render/scripts/apply-user-data.sh", "goldenimage/verify/suites/test_web.py",
                    "goldenimage/verify/suites/conftest.py", "goldenimage/verify/suites/pytest.ini"):
        assert shipped in names, f"the wheel lacks {shipped}"
    assert not [n for n in names if "__pycache__" in n or n.startswith("tests/")]

    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp, env=env)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    (site / "golden-test-deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q", "--no-deps",
          str(wheel)], cwd=tmp, env=env)
    where = _run([str(venv / "bin" / "python"), "-c", "import goldenimage; print(goldenimage.__file__)"],
                 cwd=work, env=env).stdout.strip()
    assert Path(where).is_relative_to(venv), f"goldenimage imported from {where}, not the wheel"
    return venv / "bin", env, work


def test_profiles_are_listed_from_the_wheel(installed: tuple[Path, dict[str, str], Path]) -> None:
    bin_dir, env, work = installed
    out = _run([str(bin_dir / "golden"), "profiles"], cwd=work, env=env).stdout
    for name in ("web", "sql-primary", "sql-replica", "lb", "nfs", "banking-hardened"):
        assert f" {name} " in out, out


def test_render_web_writes_the_template_user_data_and_agent(installed: tuple[Path, dict[str, str], Path]) -> None:
    bin_dir, env, work = installed
    out = _run([str(bin_dir / "golden"), "render", "web"], cwd=work, env=env).stdout
    rendered = work / "rendered" / "web-debian12-qemu"
    assert "rendered/web-debian12-qemu/web-debian12-qemu.pkr.json" in out.splitlines(), out
    template = json.loads((rendered / "web-debian12-qemu.pkr.json").read_text())
    assert (rendered / "scripts" / "apply-user-data.sh").read_text().startswith("#!")
    assert "qemu" in json.dumps(template["source"])
    user_data = (rendered / "user-data").read_text()
    assert user_data.startswith("#cloud-config") and "golden-firstboot.pyz" in user_data and "apache2" in user_data


def test_validate_web_with_packer_and_cloud_init(installed: tuple[Path, dict[str, str], Path]) -> None:
    if not (shutil.which("packer") and shutil.which("cloud-init")):
        pytest.skip("packer and cloud-init are needed: scripts/install-deps")
    bin_dir, env, work = installed
    out = _run([str(bin_dir / "golden"), "validate", "web", "--debian", "12", "--target", "qemu"], cwd=work,
               env=env).stdout
    lines = out.splitlines()
    assert "ok   web debian12 web-debian12-qemu.pkr.json" in lines and "ok   web debian12 user-data" in lines, out
    assert lines[-1] == f"{len(lines) - 1} passed, 0 failed", out


def test_cluster_render(installed: tuple[Path, dict[str, str], Path]) -> None:
    bin_dir, env, work = installed
    out_dir = work / "cluster-out"
    _run([str(bin_dir / "golden"), "cluster", "render", str(EXAMPLES / "cluster.yaml"), "--out", str(out_dir)],
         cwd=work, env=env)
    hosts = json.loads((out_dir / "hosts.json").read_text())
    profiles = {name: host["profile"] for name, host in hosts.items()}
    assert {"db1": "sql-primary", "web1": "web", "lb1": "lb"}.items() <= profiles.items(), profiles
    for name in hosts:
        assert (out_dir / name / "seed.iso").is_file() and (out_dir / name / "user-data").is_file()


def test_user_profiles_come_first(installed: tuple[Path, dict[str, str], Path], tmp_path: Path) -> None:
    bin_dir, env, work = installed
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "shop-web.yaml").write_text("description: our web node\nextends: web\npackages: [htop]\n")
    out = _run([str(bin_dir / "golden"), "--profiles-dir", str(mine), "profiles"], cwd=work, env=env).stdout
    assert "shop-web" in out and "our web node" in out and " web " in out, out
    out = _run([str(bin_dir / "golden"), "render", "shop-web", "--out", str(tmp_path / "r")], cwd=work,
               env={**env, "GOLDEN_PROFILES_DIR": str(mine)}).stdout
    assert "htop" in (tmp_path / "r" / "user-data").read_text(), out
