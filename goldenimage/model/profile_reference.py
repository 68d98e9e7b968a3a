"""The profile keys as the schema declares them (type, merge rule, documentation: `profile_schema.key`), and
the README's profile reference made from them: `make profile-reference` writes it, a test checks it."""

from __future__ import annotations

import re
import sys
import types
import typing
from collections.abc import Iterator
from enum import Enum
from pathlib import Path

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from .profile_schema import Fragment, Merge, ProfileFile, RoleFragment

#: Where each key may be given: the model that declares it.
PLACES = (("all", Fragment), ("profile", ProfileFile), ("role", RoleFragment))
START = "<!-- profile-reference: generated from goldenimage/model/profile_schema.py by `make profile-reference` -->"
END = "<!-- end of the generated profile reference -->"


def keys() -> Iterator[tuple[str, str, FieldInfo]]:
    """(key, where it may be given, its field), each key once, in declaration order."""
    seen: set[str] = set()
    for place, model in PLACES:
        for name, info in model.model_fields.items():
            if name not in seen:
                seen.add(name)
                yield name, place, info


def merge_rule(info: FieldInfo) -> tuple[Merge, str | None]:
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    by = extra.get("by")
    return Merge(str(extra["merge"])), str(by) if by is not None else None


def kind(info: FieldInfo) -> str:
    """The key's type in a word or two, from its annotation: list, map, string, true/false, one of ..."""
    annotation = info.annotation
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    for arg in typing.get_args(annotation) if union else (annotation,):  # X | None: the X
        if arg is type(None):
            continue
        origin = typing.get_origin(arg) or arg
        if origin is list:
            return "list"
        if origin is dict or (isinstance(origin, type) and issubclass(origin, BaseModel)):
            return "map"
        if origin is bool:
            return "true/false"
        if isinstance(origin, type) and issubclass(origin, Enum):
            return "one of " + ", ".join(f"`{m.value}`" for m in origin)
        if origin is str or typing.get_origin(arg) is typing.Annotated:
            return "string"
    return "string"


def keys_merged_by(rule: Merge) -> dict[str, str | None]:
    """{key: the item key (BY_KEY only)} of every key merged by `rule`."""
    return {name: merge_rule(info)[1] for name, _, info in keys() if merge_rule(info)[0] is rule}


def reference() -> str:
    """The README's key table and merge-rule table, in Markdown."""
    lines = [START, "", "| key | in | type | merged | meaning |", "|---|---|---|---|---|"]
    for name, place, info in keys():
        rule, by = merge_rule(info)
        merged = f"{rule} `{by}`" if by else str(rule)
        lines.append(f"| `{name}` | {place} | {kind(info)} | {merged} | {info.description} |")
    lines += ["", "| merge rule | keys |", "|---|---|"]
    for rule in Merge:
        names = keys_merged_by(rule)
        if names:
            lines.append(f"| {rule} | {', '.join(f'`{n}`' for n in names)} |")
    return "\n".join(lines + ["", END])


def replace_in(text: str) -> str:
    """text with its generated reference (between START and END) made anew."""
    pattern = re.compile(re.escape(START) + r".*?" + re.escape(END), re.DOTALL)
    if not pattern.search(text):
        raise ValueError("README.md holds no generated profile reference (its start and end markers)")
    return pattern.sub(lambda _: reference(), text)


if __name__ == "__main__":  # make profile-reference
    readme = Path(sys.argv[1])
    readme.write_text(replace_in(readme.read_text()))
