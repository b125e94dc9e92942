"""docs/settings.md's table of the settings the tasks read is the settings' own list, no more and no less."""

from __future__ import annotations

import re
from pathlib import Path

from inventory_pipeline.settings import _ENV_NAMES, Settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "settings.md"


def _section(title: str) -> str:
    text = DOC.read_text()
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def test_the_tasks_table_names_every_setting_and_only_those() -> None:
    documented = set(re.findall(r"`(INVENTORY_[A-Z0-9_]+)`", _section("Read by the tasks")))
    assert documented == set(_ENV_NAMES.values())


def test_the_documented_defaults_are_the_settings_defaults() -> None:
    rows = [line for line in _section("Read by the tasks").splitlines() if line.startswith("| `INVENTORY_")]
    fields = {env: name for name, env in _ENV_NAMES.items()}
    defaults = Settings()
    checked = 0
    for row in rows:
        names = re.findall(r"`(INVENTORY_[A-Z0-9_]+)`", row.split("|")[1])
        shown = [v.strip("` ") for v in row.split("|")[2].split(" / ")]
        if len(names) != len(shown):
            continue  # a row of several settings with one description ("off")
        for env, text in zip(names, shown, strict=True):
            value = getattr(defaults, fields[env])
            if isinstance(value, (int, float)) and not isinstance(value, bool) and re.fullmatch(r"[\d.]+", text):
                assert float(text) == float(value), (env, text, value)
                checked += 1
    assert checked >= 10  # the numeric defaults, read from the table and from Settings


def test_the_readme_is_a_front_page_whose_links_resolve() -> None:
    """Issue 27: at most 150 lines, and every relative link of the README and docs/ names a file that exists."""
    root = DOC.parents[1]
    readme = (root / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    broken = []
    for page in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\((?!https?:|#)([^)\s]+)\)", page.read_text()):
            path = target.split("#")[0]
            if path and not (page.parent / path).exists():
                broken.append(f"{page.relative_to(root)} -> {target}")
    assert not broken, broken
