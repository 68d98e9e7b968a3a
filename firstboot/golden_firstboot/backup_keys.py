"""Backups of a server encrypted at rest (the banking variant: file_key_management, a key per host, made at first
boot). The full job saves the server's key file in the full snapshot, read by restic where the server reads it:
inside the restic repository, which restic encrypts with the repository key of the cluster secrets, and nowhere
else. mariabackup copies the pages as they are (encrypted) and records the key settings in the copy's
backup-my.cnf; the binary logs are shipped as the server wrote them (encrypted).

A restore installs the source's key as this host's key file (its own set aside), prepares the copy with it, and
replays the binlogs, which mariadb-binlog cannot decrypt from files, through a reader: a throwaway mariadbd with
the key, an empty data directory and no network, read by `mariadb-binlog --read-from-remote-server` into the
restored server through a pipe. No decrypted binlog, event or key copy is left on disk."""

from __future__ import annotations

import os
import shlex
import shutil
import tempfile
import time
from typing import Any

from .backup_jobs import BINLOG_TOOL, RESTIC_TIMEOUT, restic, tool
from .backup_keyfile import KEY_PLUGIN
from .roles.hardened import keyfile_problem
from .steps import Context
from .system import FirstbootError


def data_path(snapshot: dict[str, Any]) -> str:
    """The spool folder a full or binlog snapshot holds (a full one of an encrypted server holds its key too)."""
    paths = snapshot.get("paths") or []
    found = [p for p in paths if p.rstrip("/").endswith(("/full", "/binlog"))]
    return found[0] if found else paths[0]


def key_path(snapshot: dict[str, Any]) -> str | None:
    """Where the source's key file lies in a full snapshot: None for a server not encrypted at rest."""
    others = [p for p in snapshot.get("paths") or [] if p != data_path(snapshot)]
    return others[0] if others else None


def install_key(ctx: Context, snapshot: dict[str, Any], keyfile: str) -> str | None:
    """The source's key file, from the full snapshot, as `keyfile` (mode 0400, written beside it and moved in);
    a different key already there is kept as keyfile.before-restore-TIME. The path it was set aside to."""
    source = key_path(snapshot)
    assert source
    folder = os.path.dirname(keyfile)
    os.makedirs(folder, 0o750, exist_ok=True)
    incoming = keyfile + ".restoring"
    fd = os.open(incoming, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.close(fd)
    aside = None
    try:
        restic(ctx, ["dump", snapshot["id"], source], stdout_path=incoming)
        with open(incoming, encoding="utf-8") as handle:
            key = handle.read()
        problem = keyfile_problem(key)
        if problem:
            raise FirstbootError(f"the key file in full backup {snapshot['short_id']} is not usable: {problem}")
        try:
            with open(keyfile, encoding="utf-8") as handle:
                current = handle.read()
        except FileNotFoundError:
            current = None
        if current is not None and current.strip() != key.strip():
            # It reads this host's own data (set aside by the restore) and binary logs: kept with them.
            aside = f"{keyfile}.before-restore-{int(time.time())}"
            os.rename(keyfile, aside)
        os.chmod(incoming, 0o400)
        os.replace(incoming, keyfile)
    finally:
        if os.path.exists(incoming):
            os.unlink(incoming)
    ctx.log(f"installed the key of the backup's source host in {keyfile}"
            + (f" (this host's own set aside as {aside})" if aside else ""))
    return aside


def key_settings(prepared: str) -> dict[str, str]:
    """The copy's backup-my.cnf settings of the key plugin (as mariabackup read them from the source server)."""
    found = {}
    with open(os.path.join(prepared, "backup-my.cnf"), encoding="utf-8") as handle:
        for line in handle:
            name, sep, value = line.strip().partition("=")
            if sep and (name.startswith(KEY_PLUGIN) or name in ("plugin_dir", "plugin_load")):
                found[name] = value.strip().strip('"')
    return found


def point_copy_at_key(copy: str, keyfile: str) -> None:
    """backup-my.cnf names the source host's key file path: --prepare reads the key from `keyfile` instead
    (mariabackup takes the plugin's settings from that file only, not its command line)."""
    path = os.path.join(copy, "backup-my.cnf")
    with open(path, encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    name = KEY_PLUGIN + "_filename"
    if not any(line.startswith(name + "=") for line in lines):
        raise FirstbootError(f"the full backup's backup-my.cnf has no {name}: it cannot be prepared")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("".join((name + "=" + keyfile if line.startswith(name + "=") else line) + "\n"
                             for line in lines))


#: The binlog reader's life, in one shell (the agent starts every command through its runner and waits for it):
#: started in the background, waited for (bounded), stopped on the way out whatever happens; the events go from
#: mariadb-binlog to the restored server through a pipe. Arguments: $1 the reader's error log, $2 the ping
#: command, $3 the pipeline, then the reader's command line.
READER_SCRIPT = """set -eu -o pipefail
errlog=$1; ping=$2; pipeline=$3; shift 3
"$@" & reader=$!
trap 'kill $reader 2>/dev/null || true; wait $reader 2>/dev/null || true' EXIT
tries=0
until eval "$ping" >/dev/null 2>&1; do
  if ! kill -0 $reader 2>/dev/null; then
    echo "the binlog reader (mariadbd) exited: $(tail -n 3 "$errlog" | tr '\\n' ' ')" >&2; exit 3
  fi
  tries=$((tries + 1))
  if [ $tries -ge 1500 ]; then echo "the binlog reader (mariadbd) did not start within 300 s" >&2; exit 3; fi
  sleep 0.2
done
eval "$pipeline"
"""


def replay_encrypted(ctx: Context, keys: dict[str, str], folder: str, names: list[str], position: int, stop: str,
                     socket: str, work: str) -> None:
    """Encrypted binlogs (mariadb-binlog cannot decrypt files) replayed through a reader: a mariadbd with the
    source's key and an empty data directory of its own, whose binary log index lists the shipped files; it
    decrypts them for `mariadb-binlog --read-from-remote-server`, whose output is piped into the restored server.
    Its socket is in a private folder, it listens on no network and it is stopped when the replay ends."""
    base = names[0].rsplit(".", 1)[0]
    with open(os.path.join(folder, base + ".index"), "w", encoding="utf-8") as handle:
        handle.write("".join(os.path.join(folder, n) + "\n" for n in names))
    data = os.path.join(work, "reader")
    shutil.rmtree(data, ignore_errors=True)
    os.makedirs(data, 0o700)
    private = tempfile.mkdtemp(prefix="golden-binlog-")  # short: a socket's path has at most 107 bytes
    reader_socket = os.path.join(private, "reader.sock")
    errlog = os.path.join(work, "reader.err")
    reader = [tool(ctx, ("mariadbd", "mariadbd")), "--no-defaults", "--user=root", "--datadir=" + data,
              "--socket=" + reader_socket, "--skip-networking", "--skip-grant-tables", "--server-id=4294967295",
              "--pid-file=" + os.path.join(private, "reader.pid"), "--log-error=" + errlog,
              "--log-bin=" + os.path.join(folder, base), "--log-bin-index=" + os.path.join(folder, base + ".index"),
              "--innodb-buffer-pool-size=16M", "--plugin-load-add=" + KEY_PLUGIN, "--encrypt-binlog=ON"]
    reader += ["--{}={}".format(name.replace("_", "-"), value) for name, value in sorted(keys.items())
               if name.startswith(KEY_PLUGIN) and value]
    if keys.get("plugin_dir"):
        reader.append("--plugin-dir=" + keys["plugin_dir"])
    ping = " ".join(shlex.quote(a) for a in ["mysql", "--protocol=socket", "--socket=" + reader_socket,
                                             "--user=root", "--batch", "-e", "SELECT 1"])
    binlog = [tool(ctx, BINLOG_TOOL), "--read-from-remote-server", "--socket=" + reader_socket, "--user=root",
              f"--start-position={position}", "--stop-datetime=" + stop] + names
    apply = ["mysql", "--protocol=socket", "--socket=" + socket, "--user=root", "--batch"]
    pipeline = " ".join(shlex.quote(a) for a in binlog) + " | " + " ".join(shlex.quote(a) for a in apply)
    try:
        ctx.run(["bash", "-c", READER_SCRIPT, "golden-binlog-reader", errlog, ping, pipeline] + reader,
                env={"TZ": "UTC"}, timeout=RESTIC_TIMEOUT)
    finally:
        shutil.rmtree(private, ignore_errors=True)
        shutil.rmtree(data, ignore_errors=True)
