"""The strict base of every input schema (profiles, overlays, role settings, clusters) and the collection of
all of a file's schema errors at once, one line each, as cloud-init reports them."""

from __future__ import annotations

import difflib
import re
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import InputError
from .inert import excerpt, inert

#: The longest problem text of one schema error line.
MAX_MESSAGE = 300


def _key(part: Any) -> str:
    """A key of the location as shown: a short one as it is (made inert when printed), a long one cut."""
    text = str(part) if isinstance(part, str | int) else type(part).__name__
    return inert(text) if len(text) <= 80 else inert(text[:80]) + "..."


class StrictModel(BaseModel):
    """Unknown keys are errors (a misspelt key never passes silently); parsed values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class SchemaErrors(InputError):
    """All schema errors of one input, one line each ('FILE: KEY: problem')."""

    def __init__(self, lines: list[str], hint: str) -> None:
        super().__init__("\n".join(lines), lines=lines, hint=hint)


def known_keys(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The keys the model accepts at `loc` (the mapping holding an unknown key), for a "did you mean" hint."""
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return []
            current = field.annotation
        elif get_origin(current) in (list, dict):
            current = get_args(current)[-1]
        else:
            return []
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _unwrap(tp: Any) -> Any:
    """X from X | None and Annotated[X, ...]; lists and dicts are left for the caller to step into."""
    while True:
        if get_origin(tp) is Annotated:
            tp = get_args(tp)[0]
            continue
        args = [a for a in get_args(tp) if a is not type(None)]
        if get_origin(tp) in (Union, UnionType) and len(args) == 1:
            tp = args[0]
            continue
        return tp


def schema_error_lines(path: str, exc: ValidationError, model: type[BaseModel] | None = None) -> list[str]:
    """One line per schema error: 'FILE: KEY: problem', as cloud-init reports all errors at once."""
    lines = []
    for err in exc.errors():
        loc = []
        for part in err["loc"]:
            if isinstance(part, int):
                loc.append(f"[{part}]")
            else:
                loc.append(("." if loc else "") + _key(part))
        key = "".join(loc) or "(top level)"
        # a message quotes at most a short excerpt of the input (a validator's message may hold more)
        msg = " ".join(str(err["msg"]).removeprefix("Value error, ").split())
        if len(msg) > MAX_MESSAGE:
            msg = msg[:MAX_MESSAGE] + "..."
        if not loc and (m := re.fullmatch(r"([a-z_]+(?:\[\d+\])?(?:\.[a-z_]+(?:\[\d+\])?)?): (.*)", msg)):
            key, msg = m[1], m[2]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (misspelt?)"
            if model is not None:
                close = difflib.get_close_matches(str(err["loc"][-1]), known_keys(model, err["loc"][:-1]), n=1)
                if close:
                    msg = f"unknown key: did you mean {close[0]!r}?"
        elif err["type"] == "enum":
            msg = f"unknown value {excerpt(err.get('input'))}: {err['msg'].lower()}"
        lines.append(f"{path}: {key}: {msg}")
    return lines
