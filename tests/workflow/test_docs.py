"""The documentation: `mkdocs build --strict` passes (no broken link or anchor, no page left
out of the nav), the README stays short and links only to what exists, and every
repository path the docs name exists."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

README_MAX_LINES = 150
REPOSITORY_PATH = re.compile(
    r"(?<![\w./-])((?:medsegflow|tests|benchmarks|experiments|rules|scripts|envs|profiles|report)"
    r"/[\w./-]*[\w/])"
)
# paths the docs give as examples for the user to create
EXAMPLE_PATHS = ("profiles/mycluster", "medsegflow/families/threshold.py", "threshold.schema")


def mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
        capture_output=True,
        text=True,
        encoding="utf-8",
    )


def test_the_docs_build_strictly_without_a_warning(repo_root, tmp_path):
    result = mkdocs_build(repo_root / "mkdocs.yml", tmp_path / "site")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "WARNING" not in output, output
    assert (tmp_path / "site" / "families" / "text_sam" / "index.html").is_file()


@pytest.mark.parametrize(
    ("page", "text", "expected"),
    [
        ("orphan.md", "# Orphan\n", "orphan.md"),
        ("demo.md", "\n[gone](no_such_page.md)\n", "no_such_page.md"),
        ("demo.md", "\n[gone](configuration.md#no-such-section)\n", "no-such-section"),
    ],
    ids=["page missing from the nav", "broken link", "broken anchor"],
)
def test_the_strict_build_fails_on(repo_root, tmp_path, page, text, expected):
    shutil.copytree(repo_root / "docs", tmp_path / "docs")
    shutil.copy(repo_root / "mkdocs.yml", tmp_path / "mkdocs.yml")
    with open(tmp_path / "docs" / page, "a", encoding="utf-8") as handle:
        handle.write(text)
    result = mkdocs_build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert result.returncode != 0
    assert expected in result.stdout + result.stderr


def test_the_readme_is_short_and_its_links_exist(repo_root):
    readme = (repo_root / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= README_MAX_LINES
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    assert any(link.startswith("docs/") for link in links)
    missing = [link for link in links if "://" not in link and not (repo_root / link).exists()]
    assert missing == []


def test_every_repository_path_the_docs_name_exists(repo_root):
    files = [
        repo_root / "README.md",
        *sorted((repo_root / "docs").rglob("*.md")),
        repo_root / "tests" / "install_system_deps.sh",
    ]
    missing = []
    for path in files:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for match in REPOSITORY_PATH.finditer(line):
                name = match.group(1)
                if line[match.end() : match.end() + 1] in ("{", "<", "*"):
                    continue  # a template, e.g. results-like {dataset} or <family>
                if any(example in name for example in EXAMPLE_PATHS):
                    continue
                if not (repo_root / name).exists():
                    missing.append(f"{path.relative_to(repo_root)}:{n}: {name}")
    assert missing == [], "\n".join(missing)
