"""The settings table of docs/operations.md, generated from ``service.settings.Settings``.

.venv/bin/python scripts/settings_table.py           # rewrite the table in docs/operations.md
.venv/bin/python scripts/settings_table.py --check   # exit 1 if the table differs (a test runs this)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from service.settings import Settings

DOC = Path(__file__).resolve().parents[1] / "docs" / "operations.md"
BEGIN, END = "<!-- settings table: scripts/settings_table.py -->", "<!-- end of settings table -->"


def _default(field: FieldInfo) -> str:
    value: Any = field.default
    if value is PydanticUndefined or value is None or value == []:
        return ""
    if isinstance(value, bool):
        value = str(value).lower()
    elif isinstance(value, Path):  # the shipped checkpoint is found from the package: name it as in the repo
        value = (
            value.relative_to(DOC.parents[1]) if value.is_relative_to(DOC.parents[1]) else value
        ).as_posix()
    return f"`{value}`"


def _meaning(field: FieldInfo) -> str:
    meaning = field.description or ""
    choices = getattr(field.annotation, "__args__", None)
    if not meaning and choices and all(isinstance(c, str) for c in choices):
        meaning = ", ".join(choices)
    return meaning.replace("|", "\\|")


def table() -> str:
    prefix = Settings.model_config.get("env_prefix", "")
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        rows.append(f"| `{prefix}{name.upper()}` | {_default(field)} | {_meaning(field)} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="only check that the table is current")
    args = parser.parse_args(argv)
    text = DOC.read_text(encoding="utf-8")
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    current = f"\n{table()}\n"
    if args.check:
        if text[start:end] != current:
            print(f"{DOC}: outdated settings table; run python scripts/settings_table.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(text[:start] + current + text[end:], encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
