"""The schema of `settings`: one section per role, each the image defaults its first-boot module reads.

Like cloud-init's per-module schemas: a key no module reads is refused (with a "did you mean" hint, from
schema_error_lines), so that a misspelt `settings.web.helth_path` never reaches an image. Host-level values
(cluster addresses, passwords, vhosts) come from the cluster file, not from here.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, Strict, model_validator

from ..core.inert import excerpt
from ..core.schema import StrictModel
from .plesk_install import RELEASE as PLESK_RELEASE
from .values import AbsPath, Url

SQL_IDENT = re.compile(r"[A-Za-z0-9_]{1,64}")
TOKEN = re.compile(r"[A-Za-z0-9._-]{1,64}")
URL_PATH = re.compile(r"/[A-Za-z0-9._~/-]*")


def _check(pattern: re.Pattern[str], what: str) -> Any:
    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(f"{excerpt(value)} is not {what}")
        return value

    return AfterValidator(check)


SqlIdent = Annotated[str, _check(SQL_IDENT, "a name of letters, digits and '_' (at most 64)")]
Token = Annotated[str, _check(TOKEN, "one word of letters, digits, '.', '_' and '-'")]
UrlPath = Annotated[str, _check(URL_PATH, "a URL path such as '/healthz'")]
#: Strict: `port: true` is not port 1 (pydantic's lax mode takes a boolean for an int).
Port = Annotated[int, Strict(), Field(ge=1, le=65535)]
Count = Annotated[int, Strict()]


class WebSettings(StrictModel):
    health_path: UrlPath | None = None
    document_root: AbsPath | None = None


class MariadbSettings(StrictModel):
    port: Port | None = None
    replication_user: SqlIdent | None = None
    binlog_expire_days: Annotated[Count, Field(ge=0, le=99)] | None = None


class GaleraSettings(StrictModel):
    sst_method: Literal["rsync", "mariabackup"] | None = None
    health_port: Port | None = None


class LbSettings(StrictModel):
    keepalived: bool | None = None
    health_path: UrlPath | None = None
    max_servers: Annotated[Count, Field(ge=1, le=1000)] | None = None


class PleskSettings(StrictModel):
    """Read at bake time: the installer's address, the release and preset it installs, and a mirror of Plesk's
    updates server (model/plesk_install.py builds the commands)."""

    installer_url: Url | None = None
    release: Annotated[str, _check(PLESK_RELEASE, "'current', 'testing', a release id such as PLESK_18_0_71 "
                                                  "or a version such as 18.0.71")] | None = None
    installation_type: Literal["Recommended", "Full"] | None = None
    source: Url | None = None


class HardenedSettings(StrictModel):
    aide_init: bool | None = None


class FirstbootSettings(BaseModel):
    """The agent's own timing (retries, waits, restarts): any key, each a number of zero or more."""

    model_config = ConfigDict(extra="allow", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _numbers(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise ValueError("expected a mapping of timing keys (retry_attempts, retry_delay, ...)")
        for key, value in data.items():
            if not isinstance(key, str) or not re.fullmatch(r"[a-z][a-z0-9_]{0,63}", key):
                raise ValueError(f"{excerpt(key)} is not a settings key (lower-case letters, digits, '_')")
            if (isinstance(value, bool) or not isinstance(value, int | float) or value < 0
                    or not math.isfinite(value)):
                # .nan and .inf are floats YAML reads: JSON would carry them as null, and the agent fails on it
                raise ValueError(f"{key}: {excerpt(value)} is not a finite number of zero or more")
        return data


class Settings(StrictModel):
    """`settings`: a section per role that has image defaults (sql-primary and sql-replica share `mariadb`; nfs
    has none: its exports are host data), and `firstboot`."""

    web: WebSettings | None = None
    mariadb: MariadbSettings | None = None
    galera: GaleraSettings | None = None
    lb: LbSettings | None = None
    plesk: PleskSettings | None = None
    hardened: HardenedSettings | None = None
    firstboot: FirstbootSettings | None = None
