"""A live converge reloads the services whose configuration it changed, and only those: drop-ins and files in
directories their package owns; never a service the cloud-config does not enable, never the agent's own units,
nothing in check mode or in a tree."""

from __future__ import annotations

from tests.unit import firstboot_fake  # noqa: F401  (puts the agent on sys.path)

from golden_firstboot.converge import Report  # isort: skip
from golden_firstboot.converge_restart import managed_services, restart_changed  # isort: skip
from golden_firstboot.system import Result  # isort: skip

RUNCMD = ["a2enmod -q ssl", "systemctl enable ssh chrony apache2 php8.2-fpm golden-firstboot.service "
          "golden-firstboot-early.service"]
#: dpkg's view of this pretend host: directory -> owners, package -> its files
#: (as on Debian 12 with web's packages: php8.2-fpm ships its Apache snippet into conf-available)
OWNERS = {"/etc/apache2/conf-available": "apache2, php8.2-fpm", "/etc/apache2": "apache2, php8.2-fpm",
          "/etc/apache2/sites-available/000-default.conf": "apache2",
          "/etc/sysctl.d": "procps, systemd", "/etc/ssh/sshd_config.d": "openssh-server",
          "/etc/php/8.2/fpm/pool.d": "php8.2-fpm"}
FILES = {"apache2": ["/lib/systemd/system/apache2.service", "/lib/systemd/system/apache-htcacheclean.service",
                     "/lib/systemd/system/apache2@.service"],
         "systemd": ["/lib/systemd/system/systemd-journald.service", "/lib/systemd/system/systemd-logind.service"],
         "procps": [], "openssh-server": ["/lib/systemd/system/ssh.service"],
         "php8.2-fpm": ["/lib/systemd/system/php8.2-fpm.service"], "apache2-data": []}


class LiveHost:
    live = True

    def __init__(self, active: set[str]) -> None:
        self.active = active
        self.commands: list[list[str]] = []

    def run(self, argv: list[str], check: bool = True, input: str | None = None) -> Result:
        self.commands.append(list(argv))
        if argv[:2] == ["dpkg-query", "-S"]:
            owner = OWNERS.get(argv[2])
            return Result(0, f"{owner}: {argv[2]}\n") if owner else Result(1, "", f"no path found matching {argv[2]}")
        if argv[:2] == ["dpkg-query", "-L"]:
            return Result(0, "\n".join(FILES.get(argv[2], [])) + "\n")
        return Result(0)

    def systemctl(self, *args: str, check: bool = True) -> Result:
        self.commands.append(["systemctl", *args])
        if args[0] == "is-active":
            return Result(0 if args[1] in self.active else 3, "active\n" if args[1] in self.active else "inactive\n")
        return Result(0)

    def restarted(self) -> list[str]:
        return [c[2] for c in self.commands if c[:2] == ["systemctl", "reload-or-restart"]]


def test_managed_services_are_the_enabled_units_without_the_agents_own():
    assert managed_services(RUNCMD) == ["ssh.service", "chrony.service", "apache2.service", "php8.2-fpm.service"]


def test_a_changed_file_reloads_the_running_service_whose_package_owns_its_directory_once():
    host = LiveHost({"apache2.service", "php8.2-fpm.service", "ssh.service", "systemd-journald.service"})
    report = Report(check=False)
    done = restart_changed(host, report, ["/etc/apache2/conf-available/zz-golden-security.conf",
                                          "/etc/apache2/sites-available/000-default.conf",
                                          "/etc/sysctl.d/60-golden.conf", "/etc/golden/image.json"], RUNCMD)
    assert done == ["apache2.service"] and host.restarted() == ["apache2.service"]
    assert report.lines == ["note: reloaded apache2.service (/etc/apache2/conf-available/zz-golden-security.conf "
                            "changed)"]
    # /etc/sysctl.d belongs to systemd too: its units are not the cloud-config's, so none is touched
    assert "systemd-journald.service" not in host.restarted()
    assert ["systemctl", "daemon-reload"] not in host.commands


def test_a_file_in_a_directory_several_packages_share_reloads_only_the_package_the_path_names():
    host = LiveHost({"apache2.service", "php8.2-fpm.service"})
    done = restart_changed(host, Report(check=False), ["/etc/apache2/conf-available/zz-golden-security.conf"], RUNCMD)
    assert done == ["apache2.service"]  # not php8.2-fpm, although it ships a file into conf-available
    host = LiveHost({"apache2.service", "php8.2-fpm.service"})
    done = restart_changed(host, Report(check=False), ["/etc/php/8.2/fpm/pool.d/www.conf"], RUNCMD)
    assert done == ["php8.2-fpm.service"]
    host = LiveHost({"apache2.service", "php8.2-fpm.service"})
    done = restart_changed(host, Report(check=False), ["/etc/apache2/sites-available/000-default.conf"], RUNCMD)
    assert done == ["apache2.service"]
    assert ["dpkg-query", "-S", "/etc/apache2/sites-available/000-default.conf"] in host.commands
    assert ["dpkg-query", "-S", "/etc/apache2/sites-available"] not in host.commands  # the file's own package


def test_a_drop_in_reloads_systemd_then_its_unit_and_a_stopped_unit_is_left_to_start():
    host = LiveHost({"php8.2-fpm.service"})
    restart_changed(host, Report(check=False), ["/etc/systemd/system/php8.2-fpm.service.d/golden-resilience.conf",
                                                "/etc/systemd/system/apache2.service.d/golden-resilience.conf",
                                                "/etc/systemd/system/golden-firstboot.service"], RUNCMD)
    assert host.commands[0] == ["systemctl", "daemon-reload"]
    assert host.restarted() == ["php8.2-fpm.service"]  # apache2 is not running: nothing to reload


def test_nothing_is_reloaded_in_check_mode_in_a_tree_or_without_changes():
    for live, check, paths in ((True, True, ["/etc/apache2/x.conf"]), (False, False, ["/etc/apache2/x.conf"]),
                               (True, False, [])):
        host = LiveHost({"apache2.service"})
        host.live = live
        assert restart_changed(host, Report(check=check), paths, RUNCMD) == [] and host.commands == []


def test_a_live_converge_enables_the_agents_units_but_starts_only_the_services():
    from golden_firstboot import converge_system

    host = LiveHost(set())
    report = Report(check=False)
    converge_system.commands(host, report, RUNCMD[1:], "runcmd", always=False)
    started = [c[2] for c in host.commands if c[:2] == ["systemctl", "start"]]
    enabled = [c[2] for c in host.commands if c[:2] == ["systemctl", "enable"]]
    assert started == ["ssh", "chrony", "apache2", "php8.2-fpm"]
    assert "golden-firstboot.service" in enabled and "golden-firstboot-early.service" in enabled
