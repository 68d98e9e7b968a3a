"""The certificate pass of `golden env apply`: what is installed is read from a web node, what is missing or due
is issued (acme_issue.py, challenge answers on every web node), and the results go to every web node at once."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import InputError
from ..core.fs import scratch
from .acme_issue import DEFAULT_ORDERS_PER_RUN, DEFAULT_WORKERS, Issuer, needs_renewal, new_account_key
from .apply import CERTS, EnvReport, Remote
from .challenge import WebNodesStore

CERTS_TAR = "env-certs.tar"


@dataclass(frozen=True)
class AcmeSettings:
    directory: str
    account_key: Path
    ca_bundle: str | None = None
    workers: int = DEFAULT_WORKERS
    orders_per_run: int = DEFAULT_ORDERS_PER_RUN


def account_key(path: Path) -> str:
    """The ACME account key in `path` (PEM), made there (0600) on first use: one account across runs."""
    if path.exists():
        text = path.read_text()
        if "PRIVATE KEY-----" not in text:
            raise InputError(f"--acme-account-key {path}: not a PEM private key")
        return text
    key = new_account_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key)
    return key


def _tar(issued: dict[str, tuple[str, str]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, (chain, key) in sorted(issued.items()):
            for member, text, mode in (("fullchain.pem", chain, 0o644), ("privkey.pem", key, 0o600)):
                data = text.encode()
                info = tarfile.TarInfo(f"{CERTS}/{name}/{member}")
                info.size, info.mode = len(data), mode
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def certificate_pass(settings: AcmeSettings) -> Callable[[list[Remote], dict[str, list[str]], EnvReport], None]:
    """The callback apply_environments calls once the web nodes are in place."""

    def run(remotes: list[Remote], wanted: dict[str, list[str]], report: EnvReport) -> None:
        if not remotes:
            return
        installed = remotes[0].agent("list", "--part", "web").get("certificates") or {}
        due = [(name, domains) for name, domains in sorted(wanted.items())
               if needs_renewal(installed.get(name), domains)]
        if not due:
            return
        issuer = Issuer(settings.directory, account_key(settings.account_key),
                        WebNodesStore([r.transport for r in remotes]), ca_bundle=settings.ca_bundle)
        result = issuer.issue_many(due, workers=settings.workers, orders_per_run=settings.orders_per_run)
        for name, reason in result.failed.items():
            report.failed.setdefault(name, f"certificate: {reason}")
        for name in result.deferred:
            report.changes.append(f"{name}: certificate deferred to the next apply (the CA's rate limit)")
        if not result.issued:
            return
        with scratch("golden-env-certs") as tmp:
            path = Path(tmp) / CERTS_TAR
            path.touch(mode=0o600)
            path.write_bytes(_tar({i.name: (i.fullchain_pem, i.key_pem) for i in result.issued}))
            for remote in remotes:
                remote.transport.put([path], remote.dir)
                remote.transport.run(["tar", "-x", "-f", f"{remote.dir}/{CERTS_TAR}", "-C", remote.dir,
                                      "--no-same-owner"])
                part = remote.agent("certs", "--part", "web", "--data", f"{remote.dir}/{CERTS}")
                report.changes += [f"{remote.name}: certificate of {name} installed"
                                   for name in part.get("installed") or []]
    return run
