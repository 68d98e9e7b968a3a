"""The profile model: inheritance, roles and hybrids, overlays and their merge rules, every input error."""

from __future__ import annotations

import re
import typing

import pytest

from goldenimage.core.errors import InputError
from goldenimage.model.disk_layout import DiskLayout
from goldenimage.model.profile_content import FileEntry
from goldenimage.model.profile_schema import Role
from goldenimage.model.profiles import list_profiles, merge, resolve
from goldenimage.model.role_settings import Settings
from tests.conftest import EXAMPLES, ROOT

ALL = ["banking-hardened", "lb", "nfs", "plesk", "sql-galera", "sql-primary", "sql-replica", "web"]


def test_the_eight_profiles_are_listed_and_base_is_not():
    assert list_profiles() == ALL


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("debian", [10, 11, 12, 13])
def test_every_profile_resolves_for_every_release(name, debian):
    profile = resolve(name, debian)
    assert profile.release.number == debian
    # Everything from the shared base is there (the hardening layer replaces chrony with the release's ntp).
    time_daemon = profile.release.vars["ntp_package"] if "hardened" in profile.roles else "chrony"
    assert {"openssh-server", time_daemon, "unattended-upgrades"} <= set(profile.packages)
    assert profile.content.system.timezone == "Etc/UTC"


def test_release_variables_pick_each_releases_php():
    assert "php7.3-fpm" in resolve("web", 10).packages
    assert "php7.4-fpm" in resolve("web", 11).packages
    assert "php8.2-fpm" in resolve("web", 12).packages
    assert "php8.4-fpm" in resolve("web", 13).packages
    assert "a2enconf -q \"php8.4-fpm\" golden-health zz-golden-security" in resolve("web", 13).content.bake_commands


def test_default_release_is_12():
    assert resolve("lb").release.number == 12


def test_extends_child_overrides_parent_and_appends_lists(write_yaml):
    write_yaml("parent.yaml", "extends: base\nroles: [web]\npackages: [htop]\nsettings: {web: {health_path: /p}}\n")
    child = write_yaml("child.yaml", "extends: parent\npackages: [jq]\nsettings: {firstboot: {retry_delay: 5}}\n")
    profile = resolve(str(child))
    assert profile.roles == (Role.WEB,)
    assert profile.packages.index("htop") < profile.packages.index("jq")
    # maps deep-merge: the role default, the parent's change and the child's section all meet
    assert profile.content.settings["web"] == {"health_path": "/p", "document_root": "/var/www/html"}
    assert profile.content.settings["firstboot"] == {"retry_delay": 5}


def test_hybrid_host_combines_roles():
    profile = resolve(str(EXAMPLES / "hybrid-web-sql.yaml"))
    assert profile.roles == (Role.WEB, Role.SQL_PRIMARY)
    assert {"apache2", "mariadb-server", "php8.2-fpm"} <= set(profile.packages)
    assert {"apache2", "mariadb", "ssh"} <= set(profile.content.services)
    assert profile.disk_size == "8G"


def test_hardened_with_a_sql_role_adds_encryption_and_without_does_not(write_yaml):
    plain = resolve("banking-hardened")
    assert not [f for f in plain.content.files if "encryption" in f.path]
    hybrid = resolve(str(write_yaml("h.yaml", "extends: base\nroles: [sql-primary, hardened]\n")))
    paths = [f.path for f in hybrid.content.files]
    assert "/etc/golden/mariadb/70-golden-encryption.cnf" in paths


def test_overlay_adds_packages_files_sysctls_users_mirror_and_changes_settings():
    base = resolve("web")
    acme = resolve("web", overlays=[EXAMPLES / "customers" / "acme.yaml"])
    assert set(acme.packages) - set(base.packages) == {"htop", "php8.2-gd"}
    assert dict(acme.content.sysctls) == {"vm.swappiness": 10}
    assert [u.name for u in acme.content.users] == ["acme-ops"]
    assert acme.content.apt.mirror == "http://mirror.acme.example/debian"
    assert acme.content.system.timezone == "Europe/Paris"
    assert acme.content.system.locale == "en_US.UTF-8"  # untouched keys stay
    assert acme.content.settings["web"]["health_path"] == "/acme-health"
    assert acme.content.settings["web"]["document_root"] == "/var/www/html"
    assert "/etc/motd" in [f.path for f in acme.content.files]


def test_overlay_file_with_same_path_replaces_the_whole_file(write_yaml):
    overlay = write_yaml("o.yaml", "files:\n  - path: /usr/share/golden/health/health.php\n    content: ok\n")
    profile = resolve("web", overlays=[overlay])
    health = [f for f in profile.content.files if f.path == "/usr/share/golden/health/health.php"]
    assert health == [FileEntry(path="/usr/share/golden/health/health.php", content="ok")]


def test_merge_rules():
    base = {"packages": ["a", "b"], "users": [{"name": "u", "shell": "/bin/sh"}], "settings": {"x": {"y": 1, "z": 2}},
            "description": "old"}
    top = {"packages": ["b", "c"], "users": [{"name": "u", "shell": "/bin/bash"}, {"name": "v"}],
           "settings": {"x": {"z": 3}}, "description": "new"}
    merged = merge(base, top)
    assert merged["packages"] == ["a", "b", "c"]  # append, no duplicates, order kept
    assert merged["users"] == [{"name": "u", "shell": "/bin/bash"}, {"name": "v"}]  # keyed: replaced whole
    assert merged["settings"] == {"x": {"y": 1, "z": 3}}  # deep merge
    assert merged["description"] == "new"  # scalar replaced
    assert base["packages"] == ["a", "b"]  # inputs untouched


def test_debian_list_replaces_and_limits_releases(write_yaml):
    p = write_yaml("only12.yaml", "extends: base\ndebian: [12]\n")
    assert resolve(str(p), 12).release.number == 12
    with pytest.raises(InputError, match=r"only12.yaml: debian: profile does not support Debian 11"):
        resolve(str(p), 11)


# --- every input error: one line naming the file and the key -------------------------------------


def _one_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message, message
    assert excinfo.value.exit_status == 2
    return message


def test_unknown_profile_is_rejected():
    with pytest.raises(InputError) as e:
        resolve("nope")
    assert "profile 'nope'" in _one_error(e) and "profiles/nope.yaml" in str(e.value)


def test_misspelt_key_is_rejected_with_file_and_key(write_yaml):
    p = write_yaml("typo.yaml", "extends: base\npackagse: [htop]\n")
    with pytest.raises(InputError) as e:
        resolve(str(p))
    assert _one_error(e).endswith("typo.yaml: packagse: unknown key: did you mean 'packages'?")


def test_unknown_role_is_rejected(write_yaml):
    p = write_yaml("r.yaml", "extends: base\nroles: [web, mail]\n")
    with pytest.raises(InputError) as e:
        resolve(str(p))
    assert "r.yaml: roles[1]: unknown value 'mail'" in _one_error(e)


def test_extends_cycle_is_rejected(write_yaml):
    write_yaml("a.yaml", "extends: b\n")
    b = write_yaml("b.yaml", "extends: a\n")
    with pytest.raises(InputError) as e:
        resolve(str(b))
    assert "extends: cycle b -> a -> b" in _one_error(e)


def test_missing_parent_is_rejected(write_yaml):
    p = write_yaml("orphan.yaml", "extends: nobody\n")
    with pytest.raises(InputError) as e:
        resolve(str(p))
    assert "orphan.yaml: extends: no profile named 'nobody'" in _one_error(e)


@pytest.mark.parametrize("release", ["9", "14", "buster"])
def test_unsupported_release_is_rejected(release):
    with pytest.raises(InputError) as e:
        resolve("web", release)
    assert f"unsupported Debian release '{release}'" in _one_error(e)


def test_profile_listing_an_unknown_release_is_rejected(write_yaml):
    p = write_yaml("old.yaml", "extends: base\ndebian: [9, 12]\n")
    with pytest.raises(InputError) as e:
        resolve(str(p), 12)
    assert "old.yaml: debian: unsupported Debian release 9" in _one_error(e)


@pytest.mark.parametrize("name", ["Apache2", "php;rm -rf", "a", "-x", "foo bar"])
def test_illegal_package_name_is_rejected(write_yaml, name):
    p = write_yaml("pkg.yaml", f"extends: base\npackages: ['{name}']\n")
    with pytest.raises(InputError) as e:
        resolve(str(p))
    assert "pkg.yaml: packages[0]: " in _one_error(e) and "not a valid Debian package name" in str(e.value)


def test_unknown_release_variable_is_rejected(write_yaml):
    p = write_yaml("var.yaml", "extends: base\npackages: ['php{{ phpp }}-fpm']\n")
    with pytest.raises(InputError, match=r"var.yaml: packages\[0\]: unknown variable \{\{ phpp \}\}"):
        resolve(str(p))


def test_overlay_errors_name_the_overlay(write_yaml):
    overlay = write_yaml("cust.yaml", "sysctl: {vm.swappiness: 1}\n")
    with pytest.raises(InputError) as e:
        resolve("web", overlays=[overlay])
    assert _one_error(e).endswith("cust.yaml: sysctl: unknown key: did you mean 'sysctls'?")


def test_overlay_cannot_change_roles(write_yaml):
    overlay = write_yaml("cust.yaml", "roles: [lb]\n")
    with pytest.raises(InputError, match="cust.yaml: roles: unknown key"):
        resolve("web", overlays=[overlay])


def test_all_errors_of_a_file_are_reported_at_once(write_yaml):
    p = write_yaml("many.yaml", "extends: base\nroles: [mail]\nfiles: [{path: relative, content: x}]\nfoo: 1\n")
    with pytest.raises(InputError) as e:
        resolve(str(p))
    lines = str(e.value).splitlines()
    assert len(lines) == 3
    assert all(line.startswith(str(p)) or "many.yaml" in line for line in lines)


def test_invalid_yaml_is_one_line(write_yaml):
    p = write_yaml("broken.yaml", "extends: base\npackages: [a, b\n")
    with pytest.raises(InputError) as e:
        resolve(str(p))
    assert "broken.yaml: not valid YAML (line" in _one_error(e)


def test_disk_layout_defaults_to_single_and_goes_into_the_manifest():
    profile = resolve("web")
    assert profile.disk_layout is DiskLayout.SINGLE
    assert profile.to_dict()["disk_layout"] == "single"


def test_banking_hardened_has_separate_mounts_on_an_8g_disk():
    profile = resolve("banking-hardened")
    assert profile.disk_layout is DiskLayout.SEPARATE_MOUNTS and profile.disk_size == "8G"
    assert profile.to_dict()["disk_layout"] == "separate-mounts"
    assert "disk_layout" not in profile.content.json


def test_disk_layout_is_a_scalar_the_child_replaces(write_yaml):
    write_yaml("parent.yaml", "extends: base\nroles: [web]\ndisk_layout: separate-mounts\ndisk_size: 7G\n")
    child = write_yaml("child.yaml", "extends: parent\ndisk_layout: single\n")
    assert resolve(str(child)).disk_layout is DiskLayout.SINGLE
    assert resolve(str(child.with_name("parent.yaml"))).disk_layout is DiskLayout.SEPARATE_MOUNTS


def test_unknown_disk_layout_is_rejected(write_yaml):
    p = write_yaml("p.yaml", "extends: base\nroles: [web]\ndisk_layout: lvm\n")
    with pytest.raises(InputError) as e:
        resolve(str(p))
    assert "p.yaml: disk_layout: unknown value 'lvm'" in _one_error(e)


def test_a_disk_smaller_than_its_layout_is_rejected(write_yaml):
    p = write_yaml("p.yaml", "extends: base\nroles: [web]\ndisk_layout: separate-mounts\n")
    with pytest.raises(InputError) as e:
        resolve(str(p))
    assert "p.yaml: disk_size: 4G is smaller than the separate-mounts disk layout (6273 MiB)" in _one_error(e)
    assert e.value.hint == "set disk_size: 7G or more"
    assert resolve(str(write_yaml("ok.yaml", "extends: p\ndisk_size: 6273M\n"))).disk_size == "6273M"


def test_overlay_cannot_change_the_disk_layout(write_yaml):
    overlay = write_yaml("cust.yaml", "disk_layout: separate-mounts\n")
    with pytest.raises(InputError, match="cust.yaml: disk_layout: unknown key"):
        resolve("web", overlays=[overlay])


def test_remove_packages_append_and_leave_packages_and_services_whoever_added_them(write_yaml):
    write_yaml("parent.yaml", "extends: base\nroles: [web]\nremove_packages: [chrony]\nsystem: {ntp_client: ntp}\n")
    child = write_yaml("child.yaml", "extends: parent\npackages: [ntpsec]\nremove_packages: [systemd-timesyncd]\n")
    overlay = write_yaml("cust.yaml", "packages: [chrony, htop]\nbase_packages: [chrony]\nservices: [chrony]\n")
    profile = resolve(str(child), 12, [overlay])
    assert profile.content.remove_packages == ("prometheus-node-exporter-collectors", "chrony", "systemd-timesyncd")
    assert "chrony" not in profile.packages and {"ntpsec", "htop", "openssh-server"} <= set(profile.packages)
    assert "chrony" not in profile.base_packages
    assert "chrony" not in profile.content.services and "ssh" in profile.content.services


def test_remove_packages_take_release_variables_and_are_checked(write_yaml):
    p = write_yaml("p.yaml", "extends: base\nroles: [web]\nremove_packages: ['{{ ntp_service }}']\n")
    assert list(resolve(str(p), 12).content.remove_packages) == ["prometheus-node-exporter-collectors", "ntpsec"]
    bad = write_yaml("bad.yaml", "extends: base\nremove_packages: [Chrony]\n")
    with pytest.raises(InputError, match=r"bad.yaml: remove_packages\[0\]: 'Chrony' is not a valid Debian package"):
        resolve(str(bad))


def test_removing_chrony_while_it_is_the_ntp_client_is_rejected(write_yaml):
    p = write_yaml("p.yaml", "extends: base\nroles: [web]\nremove_packages: [chrony]\n")
    with pytest.raises(InputError) as e:
        resolve(str(p))
    assert "p.yaml: remove_packages: chrony is removed but is the NTP client" in _one_error(e)
    assert "ntp_client: ntp" in (e.value.hint or "")


def test_every_image_setting_is_read_by_the_first_boot_agent_or_the_bake():
    # a key the schema accepts but nothing reads is a setting that silently does nothing (as plesk's installer
    # settings, nfs.export_root and mariadb.binlog_expire_days once were): refused instead, or made to work
    readers = [*(ROOT / "firstboot" / "golden_firstboot").rglob("*.py"), ROOT / "goldenimage/model/plesk_install.py"]
    code = "\n".join(path.read_text() for path in readers)
    unread = []
    for section, field in Settings.model_fields.items():
        if section == "firstboot":  # any key: the agent's own timings, read by name where they apply
            continue
        model = next(a for a in typing.get_args(field.annotation) if a is not type(None))
        unread += [f"settings.{section}.{name}" for name in model.model_fields
                   if not re.search(rf"[\"'.]{name}[\"'.]", code)]
    assert unread == []
