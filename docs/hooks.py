"""mkdocs hooks of the docs site (mkdocs.yml ``hooks:``): README.md and ARCHITECTURE.md become pages.

The two files stay where they are, at the repository root, and are rendered into the site as
``readme.md`` and ``architecture.md`` (nothing is copied into docs/). Links are written as they work
on a repository browser (``../README.md#known-limits`` from a page in docs/, ``docs/scaling.md``
from the README); before mkdocs checks a page's links, this hook rewrites each one whose target is
one of those two files, or a file under docs/ linked from them, to the page's place in the site. So
``mkdocs build --strict`` still refuses a link to a missing page or heading in either direction.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

# repository file -> its page in the site
ROOT_PAGES = {"README.md": "readme.md", "ARCHITECTURE.md": "architecture.md"}
_LINK = re.compile(r"\]\(([^)\s]+)\)")
# A fence's info string may name the tool after the language (```yaml prometheus: not a tidesync config,
# tests/unit/test_readme.py); the fence parser takes only the language, so the rest is dropped here.
_FENCE_INFO = re.compile(r"^(\s*`{3,})([\w+-]+)[ \t]+[^`{\n]*$", re.M)


def on_files(files: Files, config: Any) -> Files:
    repo = Path(config.config_file_path).parent
    for source, page in ROOT_PAGES.items():
        files.append(File.generated(config, page, content=(repo / source).read_text()))
    return files


def _repo_path(src_uri: str) -> str:
    """Where a page's markdown lives in the repository."""
    for source, page in ROOT_PAGES.items():
        if src_uri == page:
            return source
    return f"docs/{src_uri}"


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    here = _repo_path(page.file.src_uri)

    def rewrite(match: re.Match[str]) -> str:
        target = match.group(1)
        path, hash_, anchor = target.partition("#")
        if not path or "://" in path or path.startswith("mailto:"):
            return match.group(0)
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(here), path))
        if resolved in ROOT_PAGES:
            site = ROOT_PAGES[resolved]
        elif resolved.startswith("docs/"):
            site = resolved.removeprefix("docs/")
        else:
            return match.group(0)  # left for mkdocs to report: a link out of the docs
        relative = posixpath.relpath(site, posixpath.dirname(page.file.src_uri) or ".")
        return f"]({relative}{hash_}{anchor})"

    return _LINK.sub(rewrite, _FENCE_INFO.sub(r"\1\2", markdown))
