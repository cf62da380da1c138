"""Write docs/configuration.md, the configuration reference, from the config classes themselves.

Every field of a model block and of the ``platform`` block, with its type, its default and the comment above it in
the source (``plugins/evergreen/config.py`` and the stage policies). ``tests/test_config_reference.py`` fails when
the page and the classes disagree, so the reference cannot go stale.

    .venv/bin/python tools/config_reference.py            # rewrite docs/configuration.md
    .venv/bin/python tools/config_reference.py --check    # exit 1 if it is out of date
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import sys
import typing
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "plugins"))
PAGE = REPO / "docs" / "configuration.md"
LOADER_ONLY = {"source", "platform_estimators"}  # filled by the loader, never written in a block


def _comments(cls: type) -> dict[str, str]:
    """The ``#`` comment lines directly above each field in the class body."""
    lines = inspect.getsource(cls).splitlines()
    out, pending = {}, []
    for line in lines[1:]:
        text = line.strip()
        if text.startswith("#"):
            pending.append(text.lstrip("#").strip())
            continue
        m = re.match(r"(\w+)\s*:", text)
        if m and not text.startswith(("def ", "@")):
            out[m.group(1)] = " ".join(pending)
            trailing = line.split("#", 1)[1].strip() if "  #" in line else ""
            if trailing and not pending:
                out[m.group(1)] = trailing
        pending = []
    return out


def _type(tp: object) -> str:
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in typing.get_args(tp))
    text = getattr(tp, "__name__", None) if origin is None else None
    return f"`{text or str(tp).replace('typing.', '')}`".replace("|", "\\|")


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
        if dataclasses.is_dataclass(value):
            return "(block)"
    else:
        return "required"
    if isinstance(value, tuple):
        value = list(value)
    return f"`{value!r}`".replace("|", "\\|")


def _section(title: str, cls: type, out: list[str], seen: set[type]) -> None:
    hints = typing.get_type_hints(cls)
    comments = _comments(cls)
    doc = (inspect.getdoc(cls) or "").split("\n\n")[0].replace("\n", " ")
    nested = []
    out += [f"## `{title}`", ""]
    if doc and not doc.startswith(cls.__name__ + "("):
        out += [doc, ""]
    out += ["| field | type | default | meaning |", "|---|---|---|---|"]
    for f in dataclasses.fields(cls):
        if f.name in LOADER_ONLY or (f.name == "name" and title == "models.<name>"):  # the block's key
            continue
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            nested.append((f"{title}.{f.name}", tp))
            out.append(f"| `{f.name}` | block | | see `{title}.{f.name}` below |")
            continue
        args = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)]
        if args:
            nested.append((f"{title}.{f.name}[]", args[0]))
        meaning = comments.get(f.name, "").replace("|", "\\|")
        out.append(f"| `{f.name}` | {_type(tp)} | {_default(f)} | {meaning} |")
    out.append("")
    for name, sub in nested:
        if sub not in seen:
            seen.add(sub)
            _section(name, sub, out, seen)


def render() -> str:
    from evergreen.config import ModelConfig, PlatformConfig

    out = ["# Configuration reference", "",
           "Generated from the config classes by `tools/config_reference.py` (a test keeps it current); the meaning is",
           "the comment above the field in the source, where it has one. A model is a",
           "block under `models:` in any `include/config/*.yaml` (`include/config/churn.yaml` is the annotated",
           "example); `platform:` may appear in one file. An unknown field or a bad value fails at load, naming the",
           "file, the field and what is allowed.", ""]
    seen: set[type] = {ModelConfig, PlatformConfig}
    _section("models.<name>", ModelConfig, out, seen)
    _section("platform", PlatformConfig, out, seen)
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if PAGE.read_text() != text:
            sys.stderr.write(f"{PAGE} is out of date: run .venv/bin/python tools/config_reference.py\n")
            return 1
        return 0
    PAGE.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
