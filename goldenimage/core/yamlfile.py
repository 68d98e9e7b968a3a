"""Input files a user writes (profiles, overlays, role fragments, cluster files, inventories, the release
matrix, host settings, secret files): one bounded reader. It reads regular files only (a FIFO, a device or a
directory is refused at once, never read), under a size limit; YAML aliases may not expand beyond a limit
(a billion-laughs bomb is refused while parsing); a key given twice is refused; every error names the file."""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path
from typing import Any

import yaml

from .errors import InputError
from .inert import inert

#: The largest input file read (profiles with embedded file contents stay far below it).
MAX_INPUT_BYTES = 4 * 1024 * 1024
#: The most nodes a YAML document may have once its aliases are expanded: a real profile has a few thousand.
MAX_YAML_NODES = 100_000
SURROGATE = re.compile("[\ud800-\udfff]")


def display_path(path: Path) -> str:
    try:
        shown = str(path.resolve().relative_to(Path.cwd()))
    except (ValueError, OSError, RuntimeError):
        shown = str(path)
    return inert(shown)


def read_input_bytes(path: Path, limit: int = MAX_INPUT_BYTES, what: str | None = None) -> bytes:
    """The bytes of a regular file of at most `limit` bytes; one-line InputError otherwise.

    Opened without blocking (a FIFO with no writer must not hang us) and checked with fstat on the open file,
    so what is read is what was checked."""
    where = what or display_path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a socket, or a FIFO on some systems
            raise InputError(f"{where}: not a regular file") from None
        raise InputError(f"{where}: cannot read: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise InputError(f"{where}: is a directory, not a file")
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{where}: not a regular file (a device, FIFO or socket is never read)")
        if st.st_size > limit:
            raise InputError(f"{where}: too large ({st.st_size} bytes; at most {limit})")
        chunks = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:  # it grew while we read it
            raise InputError(f"{where}: too large (more than {limit} bytes)")
        return b"".join(chunks)
    except OSError as exc:
        raise InputError(f"{where}: cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def read_input_text(path: Path, limit: int = MAX_INPUT_BYTES, what: str | None = None) -> str:
    """The UTF-8 text of a regular file of at most `limit` bytes; one-line InputError otherwise."""
    data = read_input_bytes(path, limit, what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{what or display_path(path)}: not UTF-8 text (byte {exc.start})",
                         hint="save the file as UTF-8") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML would keep the last silently)."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
        except TypeError:  # an unhashable key: construct_mapping reports it
            break
        if duplicate:
            shown = str(key)[:80] if isinstance(key, str | int | float | bool) else type(key).__name__
            raise yaml.constructor.ConstructorError(
                None, None, f"key {shown!r} is given twice in one mapping", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


class _TooLarge(Exception):
    def __init__(self, problem: str, node: yaml.Node) -> None:
        super().__init__(problem)
        self.problem = problem
        self.node = node


def _expanded_size(root: yaml.Node, limit: int) -> int:
    """The node count of the document with every alias expanded; _TooLarge past `limit`, on a cycle, or on a
    scalar no UTF-8 text can hold.

    Aliases share their node object, so sizes are memoised by identity: the walk costs the file's size, not
    the expansion's."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    # iterative post-order walk (a deep document must not exhaust the Python stack)
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            open_nodes.discard(key)
            total = 1 + sum(sizes[id(child)] for child in _children(node))
            if total > limit:
                raise _TooLarge(f"expands to more than {limit} nodes (aliases multiply it)", node)
            sizes[key] = total
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            raise _TooLarge("an alias refers to a node that contains it (a recursive structure)", node)
        if isinstance(node, yaml.ScalarNode) and SURROGATE.search(node.value):
            # "\ud800" escapes decode to lone surrogates: no UTF-8 text holds one, and every encoder fails on it
            raise _TooLarge("a \\u escape makes a lone UTF-16 surrogate, which is no character", node)
        open_nodes.add(key)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in open_nodes:
                raise _TooLarge("an alias refers to a node that contains it (a recursive structure)", child)
            if id(child) not in sizes:
                stack.append((child, False))
    return sizes[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def parse_yaml(text: str, where: str, max_nodes: int = MAX_YAML_NODES) -> Any:
    """A YAML document (a key given twice, a recursive alias or an alias bomb refused); one-line InputError."""
    loader = _UniqueKeyLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, max_nodes)
        return loader.construct_document(node)
    except _TooLarge as exc:
        line = exc.node.start_mark.line + 1 if exc.node.start_mark else 0
        raise InputError(f"{where}: not accepted YAML (line {line}): {exc.problem}") from None
    except RecursionError:
        raise InputError(f"{where}: not valid YAML: nested too deep") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark else ""
        problem = inert(" ".join(str(getattr(exc, "problem", None) or exc).split()))
        raise InputError(f"{where}: not valid YAML{at}: {problem}") from None
    finally:
        loader.dispose()


def read_yaml(path: Path, limit: int = MAX_INPUT_BYTES) -> Any:
    """Any YAML document of a bounded input file; one-line InputError naming the file otherwise."""
    where = display_path(path)
    return parse_yaml(read_input_text(path, limit, where), where)


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """A YAML file whose top level is a mapping (empty: {}); one-line InputError otherwise.

    Reading (regular files only, bounded), decoding (UTF-8 only) and parsing errors, an alias bomb and a key
    given twice all name the file."""
    raw = read_yaml(path)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InputError(f"{display_path(path)}: (top level): expected a mapping of keys, got {type(raw).__name__}")
    return raw
