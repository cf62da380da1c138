"""docs/configuration.md is what tools/config_reference.py renders from the config classes: every field of every
block, with its type and default, so the reference never lists a field the loader refuses or misses one it takes."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location("config_reference", REPO / "tools" / "config_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_reference_page_is_current():
    tool = _tool()
    assert (REPO / "docs" / "configuration.md").read_text() == tool.render(), (
        "docs/configuration.md is out of date: run .venv/bin/python tools/config_reference.py")


def test_every_policy_field_is_listed():
    from evergreen.config import ModelConfig

    page = (REPO / "docs" / "configuration.md").read_text()
    for f in dataclasses.fields(ModelConfig):
        value = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(value):
            assert f"## `models.<name>.{f.name}`" in page, f.name
            for sub in dataclasses.fields(value):
                assert f"| `{sub.name}` |" in page, f"{f.name}.{sub.name}"
