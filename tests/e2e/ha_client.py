"""The HA drill's load client, run inside the client guest (stdlib only): a bounded stream of requests to the
virtual address, writes (a row inserted, its id returned) and reads in turn, at a fixed rate.

    python3 ha_client.py URL RATE MAX_SECONDS LOG PHASE_FILE STOP_FILE

URL http://ADDRESS: the PHP pages /ha/insert.php and /ha/read.php. URL mysql://USER:PASSWORD@ADDRESS/DB: the
same through the `mysql` client straight to the SQL address (a guest without the web tier).

Each request is one JSON line in LOG: its slot time (seconds since the start, on this guest's monotonic
clock), its kind, the HTTP status (0 when nothing answered within the timeout), the id a write returned, and
the phase named in PHASE_FILE when it started (the test writes the failure it is causing there). It stops at
MAX_SECONDS, after RATE * MAX_SECONDS requests, or as soon as STOP_FILE exists."""

import json
import queue
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

TIMEOUT = 5.0
WORKERS = 8


def request(url: str) -> tuple:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            return int(response.status), response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return int(exc.code), ""
    except Exception:  # noqa: BLE001 -- a timeout, a reset, a refused connection: all "nothing answered"
        return 0, ""


def sql_request(url: str, kind: str) -> tuple:
    """A write (INSERT, its id) or a read through the mysql client; (200, 'id=N node=H') or (503 or 0, '')."""
    rest = url[len("mysql://"):]
    account, _, place = rest.rpartition("@")
    user, _, password = account.partition(":")
    address, _, database = place.partition("/")
    query = ("INSERT INTO ha_log (web) VALUES ('client'); SELECT CONCAT('id=', LAST_INSERT_ID(), ' node=', @@hostname)"
             if kind == "write" else "SELECT CONCAT('count=', COUNT(*), ' node=', @@hostname) FROM ha_log")
    argv = ["mysql", "-h", address, "-u", user, "--connect-timeout=3", "-N", "-B", database, "-e", query]
    try:
        done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, timeout=TIMEOUT,
                              env={"MYSQL_PWD": password, "PATH": "/usr/bin:/bin"}, check=False)
    except subprocess.TimeoutExpired:
        return 0, ""
    return (200, done.stdout.strip()) if done.returncode == 0 else (503, "")


def main() -> int:
    url, rate, max_seconds, log_path, phase_file, stop_file = sys.argv[1:7]
    rate_f, limit = float(rate), float(max_seconds)
    slots: queue.Queue = queue.Queue()
    lock = threading.Lock()
    start = time.monotonic()
    out = open(log_path, "a")

    def phase() -> str:
        try:
            with open(phase_file) as handle:
                return handle.read().strip() or "-"
        except OSError:
            return "-"

    def worker() -> None:
        while True:
            item = slots.get()
            if item is None:
                return
            number, at = item
            kind = "write" if number % 2 == 0 else "read"
            began = time.monotonic() - start
            if url.startswith("mysql://"):
                status, body = sql_request(url, kind)
            else:
                status, body = request(url.rstrip("/") + ("/ha/insert.php" if kind == "write" else "/ha/read.php"))
            record = {"n": number, "t": round(at, 3), "began": round(began, 3),
                      "took": round(time.monotonic() - start - began, 3), "kind": kind, "status": status,
                      "phase": phase()}
            if kind == "write" and status == 200 and body.startswith("id="):
                record["id"] = int(body.split("=", 1)[1].split()[0])
            if status == 200 and "node=" in body:
                record["node"] = body.split("node=", 1)[1].split()[0]
            with lock:
                out.write(json.dumps(record) + "\n")
                out.flush()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(WORKERS)]
    for thread in threads:
        thread.start()
    total = int(rate_f * limit)
    for number in range(total):
        at = number / rate_f
        pause = start + at - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        try:
            open(stop_file).close()
            break
        except OSError:
            pass
        slots.put((number, at))
    for _ in threads:
        slots.put(None)
    for thread in threads:
        thread.join(timeout=TIMEOUT * 3)
    out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
