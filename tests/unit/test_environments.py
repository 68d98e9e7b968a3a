"""Environment data: one file, a file of many, a CSV import; every problem one line naming file and key."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from goldenimage.core.errors import EXIT_BAD_INPUT, InputError
from goldenimage.model.environments import (
    SCHEMA,
    Environment,
    EnvironmentErrors,
    agent_batch,
    load_environments,
)

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHZ0b2tlbnRva2VudG9rZW50b2tlbnRva2VudG9rZW4 customer@laptop"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def errors_of(*paths: Path, **kwargs: object) -> list[str]:
    with pytest.raises(EnvironmentErrors) as info:
        load_environments(list(paths), **kwargs)  # type: ignore[arg-type]
    assert info.value.exit_status == EXIT_BAD_INPUT
    return info.value.lines


def test_one_environment_per_file_with_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "shop.yaml", f"""\
        name: shop
        domains: [Shop.Example.COM, www.shop.example.com]
        quota: 5G
        ssh_authorized_keys: ["{KEY}"]
        """)
    [item] = load_environments([path])
    env = item.env
    assert env.domains == ["shop.example.com", "www.shop.example.com"]
    assert env.quota == 5 * 1024
    assert env.databases == 1
    assert env.php.max_children == 5
    assert item.source == "shop.yaml" or item.source.endswith("shop.yaml")


def test_a_file_listing_many_and_a_folder_with_csv(tmp_path: Path) -> None:
    write(tmp_path, "many.yaml", """\
        environments:
          - {name: shop, domains: [shop.example.com]}
          - {name: blog, domains: [blog.example.org], databases: 0, php: {max_children: 2}}
        """)
    write(tmp_path, "bulk.csv", "name,domains,databases,quota,php_memory_limit_mb,ssh_authorized_keys\n"
          f"wiki,wiki.example.net www.wiki.example.net,2,500M,256,{KEY} {KEY}\n"
          "crm,crm.example.net,,,,\n")
    declared = load_environments([tmp_path])
    by_name = {d.env.name: d for d in declared}
    assert sorted(by_name) == ["blog", "crm", "shop", "wiki"]
    wiki = by_name["wiki"].env
    assert wiki.domains == ["wiki.example.net", "www.wiki.example.net"]
    assert (wiki.databases, wiki.quota, wiki.php.memory_limit_mb) == (2, 500, 256)
    assert wiki.ssh_authorized_keys == [KEY, KEY]
    assert by_name["crm"].env.databases == 1
    assert by_name["wiki"].source.endswith("bulk.csv: line 2")
    assert by_name["blog"].source.endswith("many.yaml: environments[1]")


@pytest.mark.parametrize(("text", "key", "words"), [
    ("name: Shop\ndomains: [a.example.com]\n", "name", "not an environment name"),
    ("name: root\ndomains: [a.example.com]\n", "name", "reserved"),
    ("name: mysql\ndomains: [a.example.com]\n", "name", "reserved"),
    ("name: a_b\ndomains: [a.example.com]\n", "name", "not an environment name"),
    ("name: \"shop\\n\"\ndomains: [a.example.com]\n", "name", "not an environment name"),
    ("name: shop\ndomains: [\"a.example.com\\n\"]\n", "domains[0]", "not a DNS name"),
    ("name: shop\ndomains: [\"a.example.com evil.org\"]\n", "domains[0]", "not a DNS name"),
    ("name: shop\ndomains: [\"*.example.com\"]\n", "domains[0]", "not a DNS name"),
    ("name: shop\ndomains: [localhost]\n", "domains[0]", "not a DNS name"),
    ("name: shop\ndomains: [shop.localhost]\n", "domains[0]", "reserved"),
    ("name: shop\ndomains: [printer.local]\n", "domains[0]", "reserved"),
    ("name: shop\ndomains: [10.0.0.1]\n", "domains[0]", "not a DNS name"),
    ("name: shop\ndomains: [a.example.com, A.example.com]\n", "domains", "given twice"),
    ("name: shop\ndomains: []\n", "domains", "at least 1"),
    ("name: shop\ndomains: [\"xn--bcher-kva.example\u200b.com\"]\n", "domains[0]", "not a DNS name"),
    ("name: shop\ndomains: [a.example.com]\ndatabases: 65\n", "databases", "less than or equal"),
    ("name: shop\ndomains: [a.example.com]\ndatabases: \"1\"\n", "databases", "valid integer"),
    ("name: shop\ndomains: [a.example.com]\nquota: 5 GB\n", "quota", "not a size"),
    ("name: shop\ndomains: [a.example.com]\nphp: {max_children: 1000}\n", "php.max_children", "less than"),
    ("name: shop\ndomains: [a.example.com]\nphp: {max_childs: 3}\n", "php.max_childs", "did you mean"),
    ("name: shop\ndomains: [a.example.com]\nssh_authorized_keys: [\"ssh-ed25519 AAAA\\nfrom=x\"]\n",
     "ssh_authorized_keys[0]", ""),
    ("name: shop\ndomains: [a.example.com]\nuid: 0\n", "uid", "greater than or equal"),
    ("name: shop\ndomains: [a.example.com]\nshell: /bin/bash\n", "shell", "unknown key"),
])
def test_bad_data_is_one_line_naming_file_and_key(tmp_path: Path, text: str, key: str, words: str) -> None:
    path = tmp_path / "env.yaml"
    path.write_text(text)
    [line] = errors_of(path)
    assert line.startswith(f"{path.name}: {key}: ") or line.startswith(f"{path}: {key}: "), line
    assert words in line
    assert "\n" not in line


def test_every_problem_of_every_file_at_once(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yaml", "name: shop\ndomains: [shop.example.com]\n")
    b = write(tmp_path, "b.yaml", """\
        environments:
          - {name: shop, domains: [other.example.com]}
          - {name: blog, domains: [shop.example.com]}
          - {name: 9bad, domains: [x.example.com]}
        """)
    lines = errors_of(a, b)
    assert len(lines) == 3, lines
    assert any("b.yaml: environments[2]: name: " in line for line in lines)
    assert any("b.yaml: environments[0]: name: 'shop' is also declared at " in line and line.endswith("a.yaml")
               for line in lines)
    assert any("b.yaml: environments[1]: domains[0]: 'shop.example.com' is also environment 'shop'" in line
               for line in lines)


def test_the_clusters_own_names_and_domains_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "a.yaml", "environments: [{name: web1, domains: [www.example.com]}]\n")
    lines = errors_of(path, reserved_domains={"www.example.com"}, reserved_names={"web1"})
    assert len(lines) == 2
    assert "host of the cluster" in lines[0] and "cluster's own" in lines[1]


def test_two_names_with_one_uid_are_refused_until_one_is_given_its_own(tmp_path: Path) -> None:
    path = write(tmp_path, "a.yaml", """\
        environments:
          - {name: shop, domains: [shop.example.com], uid: 200000}
          - {name: blog, domains: [blog.example.com], uid: 200000}
        """)
    [line] = errors_of(path)
    assert "environments[1]: uid: 200000 is also environment 'shop'" in line


def test_csv_problems_name_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "bulk.csv", "name,domains,databases\nshop,shop.example.com,1\nroot,x.example.com,2\n"
                 "blog,\"b.example.com;rm -rf /\",1\nwiki,w.example.com,1,extra\n")
    lines = errors_of(path)
    assert any(line.endswith("bulk.csv: line 3: name: 'root' is a reserved name (a system or service account)")
               for line in lines), lines
    assert any("line 4: domains" in line for line in lines), lines
    assert any("line 5: more cells" in line for line in lines), lines


def test_csv_with_unknown_columns_is_refused_at_the_header(tmp_path: Path) -> None:
    path = write(tmp_path, "bulk.csv", "name,domains,shell\nshop,shop.example.com,/bin/sh\n")
    [line] = errors_of(path)
    assert "line 1: the header" in line and "not shell" in line


def test_no_files_and_unreadable_files_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        load_environments([tmp_path])
    lines = errors_of(tmp_path / "missing.yaml")
    assert "missing.yaml" in lines[0] and "cannot read" in lines[0]


def test_uid_is_the_same_everywhere_and_in_range() -> None:
    env = Environment.model_validate({"name": "shop", "domains": ["shop.example.com"]})
    again = Environment.model_validate({"name": "shop", "domains": ["other.example.com"]})
    assert env.account_uid() == again.account_uid()
    assert SCHEMA.UID_RANGE[0] <= env.account_uid() <= SCHEMA.UID_RANGE[1]


def test_what_golden_sends_passes_the_agents_own_check() -> None:
    envs = [Environment.model_validate({"name": n, "domains": [f"{n}.example.com"], "ssh_authorized_keys": [KEY]})
            for n in ("shop", "blog")]
    data = agent_batch(envs, "/srv/env", "10.10.0.0/255.255.255.0")
    assert SCHEMA.check(data) == []
    data["environments"][0]["php"]["max_children"] = 10**6
    data["environments"][1]["domains"] = ["shop.example.com"]
    problems = SCHEMA.check(data)
    assert "environments[0].php.max_children: not a number from 1 to 64" in problems
    assert "environments[1].domains: 'shop.example.com' is also 'shop''s" in problems


@pytest.mark.parametrize("data", [
    None, [], {"schema": "golden-env/1"}, {"schema": "golden-env/2", "root": "/srv/env", "db_host": "%",
                                          "environments": []},
    {"schema": "golden-env/1", "root": "/srv/../etc", "db_host": "%", "environments": []},
    {"schema": "golden-env/1", "root": "/srv/env", "db_host": "'; DROP", "environments": []},
    {"schema": "golden-env/1", "root": "/srv/env", "db_host": "%", "environments": [{"name": "x"}]},
    {"schema": "golden-env/1", "root": "/srv/env", "db_host": "%", "environments": [[1]]},
])
def test_the_agent_refuses_what_golden_would_never_send(data: object) -> None:
    assert SCHEMA.check(data)


def test_hostile_csv_is_bounded(tmp_path: Path) -> None:
    """A huge field, a NUL and a quote never closed: refused, within a memory cap."""
    path = tmp_path / "bulk.csv"
    path.write_bytes(b"name,domains\n" + b"shop,\"" + b"a" * (8 * 1024 * 1024) + b"\x00\n")
    script = textwrap.dedent(f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
        from goldenimage.model.environments import load_environments, EnvironmentErrors
        try:
            load_environments([__import__('pathlib').Path({str(path)!r})])
        except EnvironmentErrors as exc:
            print(len(exc.lines), exc.lines[0][:200])
            sys.exit(0)
        sys.exit(1)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "bulk.csv: line" in result.stdout
