"""The docs site builds with ``mkdocs build --strict``, and its generated connector pages are current.

Strict mode (with mkdocs.yml's ``validation:``) turns a link to a missing page or heading, a page left
out of the nav, and a link out of docs/ into errors; the tests below break each on a copy of the docs to
show the build really refuses them. docs/hooks.py renders README.md and ARCHITECTURE.md as pages, so
links into them are checked too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tidesync.reference_pages import COMMAND, render_pages

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ROOT / "docs" / "connectors" / "generated"


def _build(project: Path, site: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _copy_project(dest: Path) -> Path:
    shutil.copytree(ROOT / "docs", dest / "docs", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("mkdocs.yml", "README.md", "ARCHITECTURE.md"):
        shutil.copy(ROOT / name, dest / name)
    return dest


def test_the_site_builds_strict(tmp_path: Path) -> None:
    result = _build(ROOT, tmp_path / "site")
    assert result.returncode == 0, result.stdout + result.stderr
    site = tmp_path / "site"
    for page in ("index.html", "getting-started/index.html", "readme/index.html", "architecture/index.html"):
        assert (site / page).is_file(), page
    for name in render_pages():
        url = "index.html" if name == "index.md" else f"{Path(name).stem}/index.html"
        assert (site / "connectors" / "generated" / url).is_file(), name
    # README's links into docs/ were rewritten to the pages' places in the site.
    assert 'href="../monitoring/"' in (site / "readme" / "index.html").read_text()


@pytest.mark.parametrize(
    ("page", "addition", "complaint"),
    [
        ("guarantees.md", "\nSee [a page](no-such-page.md).\n", "no-such-page.md"),
        ("guarantees.md", "\nSee [the README](../README.md#no-such-section).\n", "no-such-section"),
        ("operations.md", "\nSee [a heading](monitoring.md#no-such-heading).\n", "no-such-heading"),
        ("orphan.md", "# Not in the nav\n", "orphan.md"),
    ],
    ids=["missing-page", "missing-readme-section", "missing-anchor", "page-not-in-nav"],
)
def test_the_strict_build_refuses_a_broken_site(tmp_path: Path, page: str, addition: str, complaint: str) -> None:
    project = _copy_project(tmp_path / "project")
    path = project / "docs" / page
    path.write_text((path.read_text() if path.exists() else "") + addition)
    result = _build(project, tmp_path / "site")
    assert result.returncode != 0, result.stdout + result.stderr
    assert complaint in result.stderr, result.stderr


def test_generated_connector_pages_are_current() -> None:
    pages = render_pages()
    on_disk = {p.name for p in GENERATED.glob("*.md")}
    assert on_disk == set(pages), f"docs/connectors/generated/ is stale: run `{COMMAND}`"
    stale = [name for name, text in pages.items() if (GENERATED / name).read_text() != text]
    assert not stale, f"stale pages {stale}: run `{COMMAND}`"


def test_every_connector_page_has_an_example() -> None:
    # tests/unit/test_readme.py validates every ```yaml block under docs/, these pages' included.
    missing = [name for name, text in render_pages().items() if name != "index.md" and "\n```yaml\n" not in text]
    assert not missing, f"no example config for {missing}: add one to tidesync.reference_pages._EXAMPLES"
