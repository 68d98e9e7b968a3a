"""Backups: the cluster file's `backup` section, and the `backup` section of a host's host.json it becomes.

    backup:
      store: {endpoint: "https://s3.gra.io.cloud.ovh.net", bucket: golden-backups, prefix: shop, region: gra}
      schedule: {full: daily, binlog_seconds: 15, files: hourly}    # hourly | daily | weekly
      retention: {daily: 7, weekly: 4, monthly: 6}
    secrets:
      backup_password: generate                   # the restic repository key (default `generate`)
      backup_access_key: {env: S3_ACCESS_KEY}     # the store's credentials: required, never generated
      backup_secret_key: {env: S3_SECRET_KEY}

One restic repository per cluster (s3:ENDPOINT/BUCKET/PREFIX, default prefix the cluster's name). The database
is backed up on the replica where a primary has one (the last in the file), else on the primary, and on the last
sql-galera node; files on each nfs host (its exports) and each web host without a share (its document roots)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from ..core.inert import excerpt
from ..core.schema import StrictModel

#: An S3 endpoint: scheme and authority only (the bucket and prefix are keys of their own).
ENDPOINT = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?")
#: S3 bucket naming rules (lower case, 3 to 63, no leading or trailing dot or dash).
BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
PREFIX = re.compile(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*")
REGION = re.compile(r"[a-z0-9-]{1,32}")
Period = Literal["hourly", "daily", "weekly"]
PERIOD_SECONDS = {"hourly": 3600, "daily": 86400, "weekly": 7 * 86400}


class BackupStore(StrictModel):
    endpoint: str
    bucket: str
    prefix: str | None = None  # default: the cluster's name
    region: str | None = None

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str) -> str:
        if not ENDPOINT.fullmatch(v):
            raise ValueError(f"{excerpt(v)} is not an endpoint such as https://s3.gra.io.cloud.ovh.net (no path)")
        return v

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, v: str) -> str:
        if not BUCKET.fullmatch(v) or ".." in v:
            raise ValueError(f"{excerpt(v)} is not an S3 bucket name (3 to 63 lower-case letters, digits, '.', '-')")
        return v

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str | None) -> str | None:
        if v is not None and (not PREFIX.fullmatch(v) or len(v) > 200 or ".." in v.split("/")):
            raise ValueError(f"{excerpt(v)} is not a key prefix such as 'shop' or 'backups/shop'")
        return v

    @field_validator("region")
    @classmethod
    def _region(cls, v: str | None) -> str | None:
        if v is not None and not REGION.fullmatch(v):
            raise ValueError(f"{excerpt(v)} is not a region name such as 'gra'")
        return v


class BackupSchedule(StrictModel):
    full: Period = "daily"
    binlog_seconds: int = Field(default=15, ge=5, le=3600)
    files: Period = "hourly"


class Retention(StrictModel):
    """restic forget's counts, per host and kind; the last `last` snapshots are always kept."""

    last: int = Field(default=3, ge=1, le=1000)
    daily: int = Field(default=7, ge=0, le=3660)
    weekly: int = Field(default=4, ge=0, le=520)
    monthly: int = Field(default=6, ge=0, le=120)


class Backup(StrictModel):
    store: BackupStore
    schedule: BackupSchedule = BackupSchedule()
    retention: Retention = Retention()


def max_age(period: Period) -> int:
    """Seconds after which a run on this schedule counts as failed: the period plus a quarter and an hour."""
    seconds = PERIOD_SECONDS[period]
    return seconds + seconds // 4 + 3600


def binlog_max_age(seconds: int) -> int:
    return 4 * seconds + 120


# The host side: what `golden cluster render` writes into host.json and golden-firstboot's backup role reads.
class HostDatabase(StrictModel):
    schedule: Period
    binlog_seconds: int = Field(ge=5, le=3600)
    max_age: dict[Literal["full", "binlog"], int]


class HostFiles(StrictModel):
    paths: list[str] = Field(min_length=1)
    schedule: Period
    max_age: dict[Literal["files"], int]


class HostBackup(StrictModel):
    """host.json `backup`: the repository, its key and the store's credentials (secrets), what this host backs
    up, and the retention it prunes with."""

    repository: str
    region: str | None = None
    host: str
    init: bool = False  # this host makes the repository (one host of the cluster)
    password: str
    access_key_id: str
    secret_access_key: str
    database: HostDatabase | None = None
    files: HostFiles | None = None
    retention: Retention
