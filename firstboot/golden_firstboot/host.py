"""The machine the agent works on, for the converge engine and the role steps alike: a tree under `root` (the
native bake's package layer, a test's fake root) or the live host when root is "/". Paths inside the root
follow its symbolic links inside it; commands run chrooted in a tree."""

from __future__ import annotations

import os

from .system import ConvergeError, Result, Runner

#: In a tree, commands find this directory first on PATH: its systemctl does what systemd's own does in a chroot.
SHIM_DIR = "/run/golden-converge"
CHROOT_PATH = SHIM_DIR + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class Host:
    """The system being converged: a tree under `root`, or the live host when root is "/"."""

    def __init__(self, root: str = "/", runner: Runner | None = None) -> None:
        self.root = os.path.abspath(root)
        self.live = self.root == "/"
        self.runner = runner or Runner(logger=lambda line: None, die_with_agent=False)

    def path(self, path: str) -> str:
        """`path` inside the root, its symlinks followed inside the root too (an absolute link in a tree
        points into the tree, never at the build host)."""
        if self.live:
            return path
        parts = [p for p in path.split("/") if p]
        resolved = []  # type: list[str]
        hops = 0
        while parts:
            part = parts.pop(0)
            if part == ".":
                continue
            if part == "..":
                if resolved:
                    resolved.pop()
                continue
            candidate = os.path.join(self.root, *resolved, part)
            if os.path.islink(candidate):
                hops += 1
                if hops > 40:
                    raise ConvergeError(f"too many symbolic links under {path} in {self.root}")
                target = os.readlink(candidate)
                if target.startswith("/"):
                    resolved = []
                parts = [p for p in target.split("/") if p] + parts
                continue
            resolved.append(part)
        return os.path.join(self.root, *resolved)

    def run(self, argv: list[str], check: bool = True, input: str | None = None) -> Result:
        """A command on the host: in a tree, chrooted with a clean environment and nothing mounted."""
        env = {"DEBIAN_FRONTEND": "noninteractive"}
        if self.live:
            return self.runner.run(argv, input=input, check=check, env=env)
        prefix = ["chroot", self.root, "/usr/bin/env", "-i", "PATH=" + CHROOT_PATH, "HOME=/root",
                  "LANG=C.UTF-8", "DEBIAN_FRONTEND=noninteractive", "SYSTEMD_OFFLINE=1"]
        return self.runner.run(prefix + list(argv), input=input, check=check)

    def systemctl(self, *args: str, check: bool = True) -> Result:
        """systemctl on the live host, or offline on the tree (`--root`: enable and disable only)."""
        if self.live:
            return self.runner.run(["systemctl", *args], check=check)
        return self.runner.run(["systemctl", "--root", self.root, *args], check=check)

    def table(self, name: str) -> dict[str, list[str]]:
        """/etc/passwd, /etc/group or /etc/shadow of the root, by name."""
        rows = {}
        try:
            with open(self.path("/etc/" + name), encoding="utf-8") as handle:
                for line in handle:
                    fields = line.rstrip("\n").split(":")
                    if fields and fields[0]:
                        rows[fields[0]] = fields
        except FileNotFoundError:
            pass
        return rows

    def ids(self, owner: str) -> tuple:
        """(uid, gid) of "user" or "user:group" in the root's own account tables."""
        user, _, group = owner.partition(":")
        passwd, groups = self.table("passwd"), self.table("group")
        if user not in passwd:
            raise ConvergeError(f"owner {owner!r}: no such user in {self.root}",
                                hint="create the user first, or write the file with defer: true")
        if group and group not in groups:
            raise ConvergeError(f"owner {owner!r}: no such group in {self.root}")
        gid = int(groups[group][2]) if group else int(passwd[user][3])
        return int(passwd[user][2]), gid
