"""Each profile key is declared once, in the schema (type, merge rule, documentation); the merge follows the
declared rules and the README's profile reference is made from the declarations."""

from __future__ import annotations

import pytest

from goldenimage.model import profile_reference
from goldenimage.model.profile_schema import Merge, ProfileFile, RoleFragment
from goldenimage.model.profiles import APPEND_LISTS, KEYED_LISTS, merge
from tests.conftest import ROOT


def test_the_readme_profile_reference_is_the_one_made_from_the_declarations():
    text = (ROOT / "README.md").read_text()
    assert profile_reference.replace_in(text) == text, "README.md is stale: run `make profile-reference`"


def test_every_key_of_every_file_kind_declares_its_merge_rule_and_documentation():
    for model in (ProfileFile, RoleFragment):
        for name, info in model.model_fields.items():
            assert info.description, f"{name}: no documentation"
            assert profile_reference.merge_rule(info)[0] in Merge, name
    names = [name for name, _, _ in profile_reference.keys()]
    assert len(names) == len(set(names)) and "base_packages" in names


def test_the_merge_follows_the_declared_rules():
    assert set(APPEND_LISTS) == {"packages", "base_packages", "remove_packages", "services", "bake_commands",
                                 "vm_bake_commands", "instance_unique", "roles"}
    assert KEYED_LISTS == {"files": "path", "users": "name"}
    base = {"packages": ["a", "b"], "files": [{"path": "/x", "content": "1"}], "apt": {"sources": {"s": {"a": 1}}},
            "disk_size": "4G"}
    top = {"packages": ["b", "c"], "files": [{"path": "/x", "content": "2"}], "apt": {"sources": {"t": {"b": 2}}},
           "disk_size": "8G"}
    assert merge(base, top) == {"packages": ["a", "b", "c"], "files": [{"path": "/x", "content": "2"}],
                                "apt": {"sources": {"s": {"a": 1}, "t": {"b": 2}}}, "disk_size": "8G"}


def test_a_readme_without_the_markers_is_refused():
    with pytest.raises(ValueError, match="markers"):
        profile_reference.replace_in("# no reference here\n")


def test_no_raw_dict_leaves_the_model_in_a_resolved_profile():
    """The renderers and the bake read typed fields: ResolvedProfile and its content hold no dict[str, Any]."""
    import dataclasses
    import typing

    from goldenimage.model.profile_content import AptConfig, ProfileContent, SystemConfig
    from goldenimage.model.profiles import ResolvedProfile

    for cls in (ResolvedProfile, ProfileContent, AptConfig, SystemConfig):
        hints = typing.get_type_hints(cls)
        for item in dataclasses.fields(cls):
            assert "dict[str, typing.Any]" not in str(hints[item.name]), f"{cls.__name__}.{item.name}"
