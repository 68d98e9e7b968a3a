"""`golden env apply` over fake SSH transports: what is checked before any host, who goes first, what each gets."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from goldenimage.apply.target import SSHTarget
from goldenimage.apply.transport import SSHOptions
from goldenimage.cli import main
from goldenimage.hosting.apply import apply_environments, infrastructure
from goldenimage.model.environments import EnvironmentErrors

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "examples" / "cluster.yaml"
HOSTS = ("db1", "db2", "nfs1", "web1", "web2", "lb1")


class FakeHost:
    """One host's SSH session: files put are kept, the agent's answers are canned."""

    log: list[tuple[str, str]] = []

    def __init__(self, target: SSHTarget, options: SSHOptions) -> None:
        self.name = target.host
        self.files: dict[str, str] = {}
        self.failing: dict[str, str] = {}

    def run(self, argv: Sequence[str], *, root: bool = True, timeout: float = 60, check: bool = True,
            secrets: Sequence[str] = (), cleanup: bool = False) -> subprocess.CompletedProcess[str]:
        FakeHost.log.append((self.name, " ".join(argv[:4])))
        out = ""
        if argv[0] == "mktemp":
            out = "/tmp/golden-env.abc123\n"
        elif argv[0] == "python3" and argv[2] == "env":
            data = json.loads(self.files["env-batch.json"])
            names = [e["name"] for e in data["environments"]]
            if "sql" in argv:
                report = {"changes": [f"environment {n}: create user" for n in names], "failed": {},
                          "credentials": {n: f"pw-{n}-0123456789abcdef" for n in names}}
            else:
                FakeHost.web_batches[self.name] = data
                failed = {"blog": "account blog exists with uid 1000"} if self.name == "web2" else {}
                report = {"changes": [f"Apache site golden-env-{n}" for n in names if n not in failed],
                          "failed": failed}
            out = "golden-firstboot: log line\n" + json.dumps(report) + "\n"
        return subprocess.CompletedProcess(list(argv), 0, out, "")

    def put(self, files: Sequence[Path], remote_dir: str, *, timeout: float = 60) -> None:
        for path in files:
            if path.suffix == ".json":
                self.files[path.name] = path.read_text()

    def cancel(self) -> None:
        pass

    def close(self) -> None:
        pass

    web_batches: dict[str, Any] = {}


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    path = tmp_path / "inventory.yaml"
    path.write_text("hosts:\n" + "".join(f"  {h}: {h}\n" for h in HOSTS))
    FakeHost.log = []
    FakeHost.web_batches = {}
    return path


def envs(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "envs.yaml"
    path.write_text(text)
    return path


def test_the_infrastructure_comes_from_the_cluster_files_roles() -> None:
    infra = infrastructure(CLUSTER)
    assert infra.web == ("web1", "web2") and infra.writer == "db1"
    assert infra.db_host == "10.10.0.0/255.255.255.0"
    assert "shop.example.com" in infra.cluster_domains


def test_bad_data_touches_no_host(tmp_path: Path, inventory: Path) -> None:
    path = envs(tmp_path, "environments:\n  - {name: web1, domains: [shop.example.com]}\n"
                          "  - {name: blog, domains: [\"blog.example.com\\n\"]}\n")
    with pytest.raises(EnvironmentErrors) as info:
        apply_environments([path], CLUSTER, inventory, options=SSHOptions(), factory=FakeHost)
    text = "\n".join(info.value.lines)
    assert "environments[0]: name: 'web1' is a host of the cluster" in text
    assert "environments[0]: domains[0]: 'shop.example.com' is the cluster's own" in text
    assert "environments[1]: domains[0]" in text
    assert FakeHost.log == []


def test_bad_data_exits_2_with_one_line_per_problem(tmp_path: Path, inventory: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = envs(tmp_path, "name: root\ndomains: [x.example.com]\n")
    assert main(["env", "apply", str(path), "--cluster", str(CLUSTER), "--inventory", str(inventory)]) == 2
    err = capsys.readouterr().err
    assert "envs.yaml: name: 'root' is a reserved name" in err


def test_the_writer_goes_first_and_its_passwords_reach_the_web_nodes_only(tmp_path: Path, inventory: Path) -> None:
    path = envs(tmp_path, "environments:\n  - {name: shop2, domains: [shop2.example.net]}\n"
                          "  - {name: blog, domains: [blog.example.net], databases: 0}\n")
    report = apply_environments([path], CLUSTER, inventory, options=SSHOptions(), factory=FakeHost)
    first_agent = next(host for host, cmd in FakeHost.log if cmd.startswith("python3"))
    assert first_agent == "db1"
    for node in ("web1", "web2"):
        sent = {e["name"]: e for e in FakeHost.web_batches[node]["environments"]}
        assert sent["shop2"]["db_password"] == "pw-shop2-0123456789abcdef"
        assert FakeHost.web_batches[node]["db_address"] == "10.10.0.11"
    # one environment failing on one node is reported with its reason; the others went on
    assert report.failed == {"blog": "web2: account blog exists with uid 1000"}
    assert "web1: Apache site golden-env-blog" in report.changes
    lines = report.lines(check=False)
    assert lines[-1].startswith("changed: ") and "failed: 1" in lines[-1]
    assert not any("pw-" in line for line in lines)
    # every remote directory is removed at the end
    assert sum(1 for _, cmd in FakeHost.log if cmd.startswith("rm -rf --")) == 3
