"""`golden cluster render`: one cluster file to each host's first-boot data; bad input is one line per
problem and writes nothing; secrets are generated once, reused, and never in clear outside secrets.json."""

from __future__ import annotations

import argparse
import base64
import copy
import json
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from goldenimage.commands.cluster_cli import add_parser
from goldenimage.core.errors import InputError
from goldenimage.model.cluster import ClusterErrors
from goldenimage.model.profiles import resolve
from goldenimage.render.cluster import render_cluster
from goldenimage.render.userdata import image_info
from tests.conftest import EXAMPLES, ROOT, TEST_KEY
from tests.unit.firstboot_fake import run_scenario
from tests.unit.test_seed import read_iso

CLUSTER: dict[str, Any] = {
    "name": "shop",
    "network": "10.10.0.0/24",
    "interface": {"mac_prefix": "52:54:00:10:00", "name": "eth1"},
    "ssh_authorized_keys": [TEST_KEY],
    "secrets": {"replication_password": "generate", "keepalived_password": "generate"},
    "databases": ["shop"],
    "db_users": [{"name": "shop", "database": "shop", "password": "generate"}],
    "hosts": [
        {"name": "db1", "profile": "sql-primary", "address": "10.10.0.11"},
        {"name": "db2", "profile": "sql-replica", "address": "10.10.0.12", "primary": "db1"},
        {"name": "nfs1", "profile": "nfs", "address": "10.10.0.30", "exports": ["/srv/nfs/www"]},
        {"name": "web1", "profile": "web", "address": "10.10.0.21", "lb": "lb1", "nfs": "nfs1"},
        {"name": "web2", "profile": "web", "address": "10.10.0.22", "lb": "lb1", "nfs": "nfs1"},
        {"name": "lb1", "profile": "lb", "address": "10.10.0.10", "virtual_address": "10.10.0.5"},
    ],
}
HOST_FILES = ["meta-data", "network-config", "seed.iso", "user-data"]


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Errors name files relative to the working directory: run beside the cluster file."""
    monkeypatch.chdir(tmp_path)


def cluster(**changes: Any) -> dict[str, Any]:
    """The reference cluster with top-level keys changed."""
    data = copy.deepcopy(CLUSTER)
    data.update(copy.deepcopy(changes))
    return data


def with_host(index: int, **changes: Any) -> dict[str, Any]:
    """The reference cluster with keys of hosts[index] changed (None removes a key)."""
    data = cluster()
    host = data["hosts"][index]
    for key, value in changes.items():
        if value is None:
            host.pop(key, None)
        else:
            host[key] = value
    return data


def write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def render(tmp_path: Path, data: dict[str, Any], environ: dict[str, str] | None = None) -> Path:
    out = tmp_path / "out"
    render_cluster(write(tmp_path, data), out, environ or {})
    return out


def problems(tmp_path: Path, data: dict[str, Any], environ: dict[str, str] | None = None) -> list[str]:
    """The error lines for a bad cluster, after checking that nothing at all was written."""
    path = write(tmp_path, data)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(InputError) as caught:
        render_cluster(path, tmp_path / "out", environ or {})
    assert caught.value.exit_status == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no output, no staging leftovers
    return caught.value.message.splitlines()


def host_json(out: Path, host: str) -> dict[str, Any]:
    """/etc/golden/host.json as the host's user-data writes it."""
    user_data = yaml.safe_load((out / host / "user-data").read_text())
    (entry,) = [f for f in user_data["write_files"] if f["path"] == "/etc/golden/host.json"]
    assert entry["encoding"] == "b64" and entry["permissions"] == "0600"
    return json.loads(base64.b64decode(entry["content"]))


# Output


def test_example_cluster_renders_every_host(tmp_path: Path) -> None:
    out = tmp_path / "shop"
    hosts = render_cluster(EXAMPLES / "cluster.yaml", out, {})
    assert [h.name for h in hosts] == ["db1", "db2", "nfs1", "web1", "web2", "lb1"]
    assert sorted(p.name for p in out.iterdir()) == sorted(["db1", "db2", "nfs1", "web1", "web2", "lb1",
                                                            "hosts.json", "secrets.json", ".golden-output"])
    for host in hosts:
        assert sorted(p.name for p in (out / host.name).iterdir()) == HOST_FILES
        assert host.line().split() == [host.name, host.address, ",".join(host.roles),
                                       str(out / host.name / "seed.iso")]
    index = json.loads((out / "hosts.json").read_text())
    assert index["db2"] == {"address": "10.10.0.12", "roles": ["sql-replica"], "profile": "sql-replica",
                            "instance_id": hosts[1].instance_id, "mac": "52:54:00:10:00:0c",
                            "uplink_mac": "52:54:00:20:00:0c"}
    assert index["lb1"]["virtual_address"] == "10.10.0.5"


def test_host_json_per_role_is_what_the_first_boot_agent_reads(tmp_path: Path) -> None:
    out = render(tmp_path, cluster())
    db1, db2, nfs1, web1, lb1 = (host_json(out, h) for h in ("db1", "db2", "nfs1", "web1", "lb1"))
    secrets = json.loads((out / "secrets.json").read_text())
    assert db1 == {"hostname": "db1", "address": "10.10.0.11", "network": "10.10.0.0/24",
                   "mariadb": {"server_id": 11, "replication_password": secrets["replication_password"],
                               "databases": ["shop"],
                               "users": [{"name": "shop", "database": "shop",
                                          "password": secrets["db_users.shop"]}]}}
    assert db2["mariadb"] == {"server_id": 12, "primary": "10.10.0.11",
                              "replication_password": secrets["replication_password"]}
    assert nfs1["nfs"] == {"exports": [{"path": "/srv/nfs/www", "options": "rw,sync,no_subtree_check,root_squash"}]}
    assert web1["web"] == {"nfs": {"server": "10.10.0.30", "export": "/srv/nfs/www"},
                           "lb": {"address": "10.10.0.5", "backend": "web"}}
    assert lb1["lb"] == {
        "frontends": [{"name": "www", "bind": "*:80", "backend": "web"},
                      {"name": "www-tls", "bind": "*:443", "backend": "web-tls", "mode": "tcp"}],
        "backends": [{"name": "web", "port": 80, "servers": [{"name": "web1", "address": "10.10.0.21", "port": 80},
                                                             {"name": "web2", "address": "10.10.0.22", "port": 80}]},
                     # HTTPS passed through to the same web nodes (TLS ends there), checked as the HTTP pool is
                     {"name": "web-tls", "mode": "tcp", "port": 443, "follows": "web",
                      "servers": [{"name": "web1", "address": "10.10.0.21", "port": 443},
                                  {"name": "web2", "address": "10.10.0.22", "port": 443}]}],
        "keepalived": {"virtual_address": "10.10.0.5/24", "router_id": 5, "priority": 150,
                       "password": secrets["keepalived_password"], "interface": "eth1"},
    }


@pytest.mark.parametrize("host, steps", [
    ("db1", ["mariadb.running", "mariadb.host-config", "sql-primary.replication-user", "sql-primary.databases",
             "sql-primary.users"]),
    ("db2", ["mariadb.running", "mariadb.host-config", "sql-replica.wait-primary", "sql-replica.seed",
             "sql-replica.replication-running"]),
    ("nfs1", ["nfs.exports"]),
    ("web1", ["web.snakeoil", "web.nfs-mount", "web.share-watch", "web.health"]),
    ("lb1", ["lb.haproxy", "lb.keepalived"]),
])
def test_each_host_completes_its_first_boot_on_a_fake_host(tmp_path: Path, host: str, steps: list[str]) -> None:
    out = render(tmp_path, cluster())
    profile = json.loads((out / "hosts.json").read_text())[host]["profile"]
    scenario = {"image": image_info(resolve(profile), None), "host": host_json(out, host)}
    result = run_scenario(scenario, str(tmp_path / "root"), runs=1)
    run = result["runs"][0]
    assert run["exit"] == 0, result["log"]
    assert [step for step, (state, _) in run["steps"].items() if state == "done"] == [
        "common.host-settings-private", *steps]


def test_keepalived_pair_shares_the_pool_and_the_first_listed_holds_the_address(tmp_path: Path) -> None:
    data = cluster()
    data["hosts"].append({"name": "lb2", "profile": "lb", "address": "10.10.0.9", "virtual_address": "10.10.0.5"})
    data["hosts"][4]["lb"] = "lb2"
    out = render(tmp_path, data)
    lb1, lb2 = host_json(out, "lb1")["lb"], host_json(out, "lb2")["lb"]
    assert lb1["backends"] == lb2["backends"] and len(lb1["backends"][0]["servers"]) == 2
    assert (lb1["keepalived"]["priority"], lb2["keepalived"]["priority"]) == (150, 100)
    assert (lb1["keepalived"]["peers"], lb2["keepalived"]["peers"]) == (["10.10.0.9"], ["10.10.0.10"])
    assert host_json(out, "web2")["web"]["lb"]["address"] == "10.10.0.5"


def test_profile_path_is_read_beside_the_cluster_file_and_gives_both_roles(tmp_path: Path) -> None:
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "hybrid.yaml").write_text("extends: base\nroles: [web, sql-primary]\n")
    data = cluster(hosts=[{"name": "solo", "profile": "profiles/hybrid.yaml", "address": "10.10.0.40"}])
    settings = host_json(render(tmp_path, data), "solo")
    assert settings["mariadb"]["databases"] == ["shop"] and "web" not in settings  # no lb, nfs or vhosts


def test_network_config_gives_the_private_nic_its_address_by_mac(tmp_path: Path) -> None:
    out = render(tmp_path, cluster(uplink={"mac_prefix": "52:54:00:20:00", "name": "eth0"}))
    assert yaml.safe_load((out / "db1" / "network-config").read_text()) == {"version": 2, "ethernets": {
        "eth0": {"match": {"macaddress": "52:54:00:20:00:0b"}, "set-name": "eth0", "dhcp4": True},
        "eth1": {"match": {"macaddress": "52:54:00:10:00:0b"}, "set-name": "eth1", "addresses": ["10.10.0.11/24"]},
    }}


def test_without_interface_there_is_no_network_config(tmp_path: Path) -> None:
    out = render(tmp_path, cluster(interface=None))
    assert sorted(p.name for p in (out / "db1").iterdir()) == ["meta-data", "seed.iso", "user-data"]
    assert "keepalived" in host_json(out, "lb1")["lb"] and "interface" not in host_json(out, "lb1")["lb"]["keepalived"]


SYSTEM_PYTHON = "/usr/bin/python3"


def _has_cloud_init_module() -> bool:
    probe = [SYSTEM_PYTHON, "-c", "import cloudinit.net.eni"]
    return Path(SYSTEM_PYTHON).exists() and subprocess.run(probe, capture_output=True).returncode == 0


@pytest.mark.skipif(not _has_cloud_init_module(), reason="cloud-init's Python package is not installed")
def test_network_config_renders_through_cloud_inits_own_eni_renderer(tmp_path: Path) -> None:
    out = render(tmp_path, cluster(uplink={"mac_prefix": "52:54:00:20:00", "name": "eth0"}))
    script = ("import sys, yaml\nfrom cloudinit.net import eni, network_state\n"
              "ns = network_state.parse_net_config_data(yaml.safe_load(open(sys.argv[1])))\n"
              "r = eni.Renderer()\nprint(r._render_interfaces(ns))\nprint(r._render_persistent_net(ns))\n")
    proc = subprocess.run([SYSTEM_PYTHON, "-c", script, str(out / "db2" / "network-config")],
                          capture_output=True, text=True, check=True)
    assert "iface eth1 inet static\n    address 10.10.0.12/24" in proc.stdout
    assert "iface eth0 inet dhcp" in proc.stdout
    assert 'ATTR{address}=="52:54:00:10:00:0c", NAME="eth1"' in proc.stdout


@pytest.mark.skipif(shutil.which("cloud-init") is None, reason="cloud-init is not installed")
def test_every_user_data_passes_cloud_init_schema(tmp_path: Path) -> None:
    from goldenimage.bake.validate import cloud_init_schema

    out = render(tmp_path, cluster())
    for host in json.loads((out / "hosts.json").read_text()):
        ok, message = cloud_init_schema(out / host / "user-data")
        assert ok, f"{host}: {message}"


def test_seed_iso_holds_the_hosts_files(tmp_path: Path) -> None:
    out = render(tmp_path, cluster())
    label, files = read_iso(out / "web1" / "seed.iso")
    assert label == "cidata"
    assert files == {name: (out / "web1" / name).read_text() for name in ("user-data", "meta-data", "network-config")}
    meta = yaml.safe_load(files["meta-data"])
    assert meta["local-hostname"] == "web1" and meta["instance-id"].startswith("shop-web1-")


# Secrets


def _content(path: Path) -> object:
    """A file's bytes; for a seed ISO its label and files (ISO 9660 records the time it was written)."""
    return read_iso(path) if path.suffix == ".iso" else path.read_bytes()


def test_generated_secrets_are_made_once_and_reused_so_a_rerender_changes_nothing(tmp_path: Path) -> None:
    out = render(tmp_path, cluster())
    first = {p.relative_to(out): _content(p) for p in out.rglob("*") if p.is_file()}
    out = render(tmp_path, cluster())
    second = {p.relative_to(out): _content(p) for p in out.rglob("*") if p.is_file()}
    assert first == second  # same secrets, same host.json, same instance-ids, same seeds
    assert sorted(json.loads(first[Path("secrets.json")])) == ["db_users.shop", "keepalived_password",
                                                                "replication_password"]


def test_a_changed_host_gets_a_new_instance_id_and_the_others_keep_theirs(tmp_path: Path) -> None:
    out = render(tmp_path, cluster())
    before = json.loads((out / "hosts.json").read_text())
    out = render(tmp_path, with_host(1, server_id=99))
    after = json.loads((out / "hosts.json").read_text())
    changed = [h for h in before if before[h]["instance_id"] != after[h]["instance_id"]]
    assert changed == ["db2"]


def test_secrets_json_and_host_files_are_private(tmp_path: Path) -> None:
    out = render(tmp_path, cluster())
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert stat.S_IMODE((out / "secrets.json").stat().st_mode) == 0o600
    for name in HOST_FILES:
        assert stat.S_IMODE((out / "db1" / name).stat().st_mode) == 0o600


def test_no_secret_is_in_clear_in_any_file_but_secrets_json(tmp_path: Path) -> None:
    licence = tmp_path / "plesk.key"
    licence.write_text("PLSK.FILE.0123456789\n")
    data = cluster(secrets={"replication_password": {"env": "REPL_PW"}, "plesk_license": {"file": "plesk.key"}})
    data["hosts"].append({"name": "plesk1", "profile": "plesk", "address": "10.10.0.40"})
    out = render(tmp_path, data, {"REPL_PW": "Env-Repl-Secret-42"})
    stored = json.loads((out / "secrets.json").read_text())
    secrets = [*stored.values(), "Env-Repl-Secret-42", "PLSK.FILE.0123456789"]
    assert "replication_password" not in stored and "plesk_license" not in stored  # read at every render
    for path in out.rglob("*"):
        if path.is_file() and path.name != "secrets.json":
            body = path.read_bytes()
            assert not [s for s in secrets if s.encode() in body], path
    assert host_json(out, "db1")["mariadb"]["replication_password"] == "Env-Repl-Secret-42"
    assert host_json(out, "plesk1")["plesk"] == {"license_key": "PLSK.FILE.0123456789"}


def test_cli_prints_one_line_per_host_and_no_secret(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="golden")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["cluster", "render", str(write(tmp_path, cluster())), "--out", str(tmp_path / "o")])
    assert args.func(args) == 0
    printed = capsys.readouterr()
    assert [line.split()[0] for line in printed.out.splitlines()] == ["db1", "db2", "nfs1", "web1", "web2", "lb1"]
    for secret in json.loads((tmp_path / "o" / "secrets.json").read_text()).values():
        assert secret not in printed.out + printed.err


# Bad input: one line per problem, exit status 2, nothing written


def test_unknown_key_is_rejected(tmp_path: Path) -> None:
    assert problems(tmp_path, with_host(0, adress="10.10.0.11")) == [
        "cluster.yaml: hosts[0].adress: unknown key: did you mean 'address'?"]


def test_unknown_profile_is_rejected(tmp_path: Path) -> None:
    (line,) = problems(tmp_path, with_host(3, profile="webserver"))
    assert line.startswith("cluster.yaml: hosts[3].profile: profile 'webserver': no file ")
    assert line.endswith("; known profiles: banking-hardened, lb, nfs, plesk, sql-galera, sql-primary, sql-replica, "
                         "web")


def test_unknown_role_in_a_profile_file_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "odd.yaml").write_text("extends: base\nroles: [dba]\n")
    (line,) = problems(tmp_path, with_host(0, profile="odd.yaml"))
    assert line.startswith("cluster.yaml: hosts[0].profile: odd.yaml: roles[0]: unknown value 'dba'")


def test_replica_without_primary_is_rejected(tmp_path: Path) -> None:
    assert problems(tmp_path, with_host(1, primary=None)) == [
        "cluster.yaml: hosts[1].primary: missing: a sql-replica names the sql-primary host it replicates"]


def test_replica_whose_primary_is_not_a_sql_primary_is_rejected(tmp_path: Path) -> None:
    assert problems(tmp_path, with_host(1, primary="web1")) == [
        "cluster.yaml: hosts[1].primary: web1 is not a sql-primary host (its roles: web)"]


def test_replica_whose_primary_is_not_in_the_cluster_is_rejected(tmp_path: Path) -> None:
    assert problems(tmp_path, with_host(1, primary="db9")) == [
        "cluster.yaml: hosts[1].primary: no host named 'db9' in this cluster"]


def test_web_host_whose_lb_is_not_a_load_balancer_is_rejected(tmp_path: Path) -> None:
    assert problems(tmp_path, with_host(3, lb="nfs1")) == [
        "cluster.yaml: hosts[3].lb: nfs1 is not a lb host (its roles: nfs)"]


def test_web_host_whose_nfs_is_not_an_nfs_server_is_rejected(tmp_path: Path) -> None:
    assert problems(tmp_path, with_host(4, nfs="db1")) == [
        "cluster.yaml: hosts[4].nfs: db1 is not a nfs host (its roles: sql-primary)"]


def test_role_keys_on_a_host_without_the_role_are_rejected(tmp_path: Path) -> None:
    assert problems(tmp_path, with_host(0, lb="lb1")) == [
        "cluster.yaml: hosts[0].lb: only a web host takes lb (db1 is sql-primary)"]


def test_duplicate_names_are_rejected(tmp_path: Path) -> None:
    assert problems(tmp_path, with_host(4, name="web1")) == [
        "cluster.yaml: hosts[4].name: 'web1' is already the name of hosts[3]"]


def test_duplicate_addresses_are_rejected(tmp_path: Path) -> None:
    assert problems(tmp_path, with_host(4, address="10.10.0.21")) == [
        "cluster.yaml: hosts[4].address: 10.10.0.21 is already the address of web1 (hosts[3])"]


def test_a_virtual_address_taken_by_a_host_is_rejected(tmp_path: Path) -> None:
    assert problems(tmp_path, with_host(5, virtual_address="10.10.0.11")) == [
        "cluster.yaml: hosts[5].virtual_address: 10.10.0.11 is already the address of db1 (hosts[0])"]


def test_address_outside_the_network_is_rejected(tmp_path: Path) -> None:
    assert problems(tmp_path, with_host(2, address="10.20.0.30")) == [
        "cluster.yaml: hosts[2].address: 10.20.0.30 is outside the cluster network 10.10.0.0/24"]


def test_invalid_hostname_is_rejected(tmp_path: Path) -> None:
    assert problems(tmp_path, with_host(3, name="Web_1")) == [
        "cluster.yaml: hosts[3].name: 'Web_1' is not a valid host name (lower-case letters, digits and '-', "
        "at most 63)"]


def test_secret_in_clear_is_rejected_and_never_repeated(tmp_path: Path) -> None:
    data = cluster(secrets={"replication_password": "hunter2-in-clear"})
    data["db_users"][0]["password"] = "also-in-clear"
    lines = problems(tmp_path, data)
    hint = "a secret in clear is refused: write `generate`, {env: VARIABLE} or {file: PATH}"
    assert lines == [f"cluster.yaml: secrets.replication_password: {hint}",
                     f"cluster.yaml: db_users[0].password: {hint}"]
    assert "in-clear" not in "\n".join(lines)


def test_env_secret_whose_variable_is_unset_is_rejected(tmp_path: Path) -> None:
    data = cluster(secrets={"replication_password": {"env": "REPL_PW"}})
    assert problems(tmp_path, data, {}) == [
        "cluster.yaml: secrets.replication_password.env: environment variable REPL_PW is not set (or empty)"]


def test_plesk_host_needs_a_licence_that_is_not_generated(tmp_path: Path) -> None:
    data = cluster()
    data["hosts"].append({"name": "plesk1", "profile": "plesk", "address": "10.10.0.40"})
    assert problems(tmp_path, data) == [
        "cluster.yaml: secrets.plesk_license: missing: a plesk host needs its licence key ({env: VARIABLE} or "
        "{file: PATH})"]
    data["secrets"]["plesk_license"] = "generate"
    assert problems(tmp_path, data) == [
        "cluster.yaml: secrets.plesk_license: a licence key cannot be generated: give {env: VARIABLE} or "
        "{file: PATH}"]


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    data = with_host(1, primary=None)
    data["hosts"][4]["address"] = "10.10.0.21"
    data["hosts"][2]["address"] = "192.168.1.30"
    assert [line.split(": ")[1] for line in problems(tmp_path, data)] == [
        "hosts[1].primary", "hosts[2].address", "hosts[4].address"]


def test_a_failed_render_leaves_the_previous_output_untouched(tmp_path: Path) -> None:
    out = render(tmp_path, cluster())
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(ClusterErrors):
        render_cluster(write(tmp_path, with_host(1, primary=None)), out, {})
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cluster.yaml", "out"]


def test_a_rerender_drops_hosts_no_longer_in_the_cluster(tmp_path: Path) -> None:
    out = render(tmp_path, cluster())
    data = cluster()
    del data["hosts"][4]
    data["hosts"][-1]["virtual_address"] = "10.10.0.5"
    render(tmp_path, data)
    assert not (out / "web2").exists() and "web2" not in json.loads((out / "hosts.json").read_text())


def test_a_directory_that_is_not_a_cluster_render_is_not_replaced(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    with pytest.raises(InputError, match="not written by golden"):
        render_cluster(write(tmp_path, cluster()), out, {})
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_golden_cluster_render_exits_2_with_one_line_when_wired_into_the_cli(tmp_path: Path) -> None:
    from goldenimage.cli import build_parser

    try:
        build_parser().parse_args(["cluster", "render", "x.yaml"])
    except SystemExit:
        pytest.skip("`cluster` is not registered in goldenimage/cli.py yet "
                    "(add_parser from goldenimage.commands.cluster_cli)")
    path = write(tmp_path, with_host(1, primary=None))
    proc = subprocess.run([sys.executable, "-m", "goldenimage.cli", "cluster", "render", str(path), "--out",
                           str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[0].startswith("golden: error: ")
    assert proc.stderr.splitlines()[0].endswith("hosts[1].primary: missing: a sql-replica names the sql-primary "
                                                "host it replicates")
    assert not (tmp_path / "out").exists()
