"""The first-boot agent's contract with `golden`, read from the agent's own file (firstboot/golden_firstboot/
host_schema.py, shipped data): the host.json schema, the secret words and the one redaction. The agent owns it;
`golden` loads that file as it is (standard library only, no relative import), so the two cannot drift."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from functools import cache
from types import ModuleType
from typing import Any

from .errors import GoldenError
from .paths import shipped


@cache
def _schema() -> ModuleType:
    path = shipped("firstboot") / "golden_firstboot" / "host_schema.py"
    spec = importlib.util.spec_from_file_location("golden_firstboot_host_schema", path)
    if spec is None or spec.loader is None:
        raise GoldenError(f"{path}: cannot load the agent's host.json contract")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def secret_words() -> tuple[str, ...]:
    """Keys whose string values are secrets, wherever they are in host data."""
    return tuple(_schema().SECRET_WORDS)


def find_secrets(node: Any) -> list[str]:
    """Every string of host data under a key that names a secret."""
    return list(_schema().find_secrets(node))


def redact(text: str, secrets: Iterable[str]) -> str:
    """text with every secret replaced by *** (the agent's own redaction)."""
    return str(_schema().redact(text, list(secrets)))


def host_errors(data: Any) -> list[str]:
    """Every way host data departs from the agent's host.json contract (dotted keys, secrets redacted)."""
    return list(_schema().validate(data))
