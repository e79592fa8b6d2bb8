"""The book's structure: table of contents, committed notebooks, chapter headers, the landing page."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from tests.conftest import ROOT

BOOK = ROOT / "book"


def _toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                files.append(node["file"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(toc.get("parts", []))
    return files


def _notebooks() -> list:
    return sorted(p for p in BOOK.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def _chapters() -> list:
    """Notebooks that are chapters of a post (everything except the interactive-figures page)."""
    return [p for p in _notebooks() if p.parent != BOOK]


def test_every_notebook_is_in_the_toc_and_vice_versa():
    toc = _toc_files()
    assert len(toc) == len(set(toc)), f"duplicate entries in _toc.yml: {toc}"
    on_disk = {p.relative_to(ROOT).with_suffix("").as_posix() for p in _notebooks()}
    in_toc = set(toc)
    assert on_disk - in_toc == set(), f"notebooks missing from _toc.yml: {sorted(on_disk - in_toc)}"
    for f in toc:
        matches = [ROOT / f"{f}{ext}" for ext in (".ipynb", ".md")]
        assert any(m.exists() for m in matches), f"_toc.yml names {f}, which does not exist"


@pytest.mark.parametrize("nb", _notebooks(), ids=lambda p: p.name)
def test_notebook_is_committed_clean(nb):
    data = json.loads(nb.read_text())
    assert data["metadata"]["kernelspec"]["name"] == "python3"
    for i, cell in enumerate(data["cells"]):
        if cell["cell_type"] == "code":
            assert cell.get("outputs", []) == [], f"{nb.name}: cell {i} has outputs"
            assert cell.get("execution_count") is None, f"{nb.name}: cell {i} has a count"


@pytest.mark.parametrize("nb", _chapters(), ids=lambda p: p.name)
def test_chapter_has_header_checks_and_references(nb):
    cells = json.loads(nb.read_text())["cells"]
    first = "".join(cells[0]["source"])
    assert first.startswith("# "), f"{nb.name}: the first cell must be the '# Title' header"
    assert re.search(r"https://kexue\.fm/archives/\d+", first), (
        f"{nb.name}: header lacks the post link"
    )
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    assert "kexue_lib" in code
    n_checks = len(re.findall(r"^\s*assert\b|assert_close|assert_allclose", code, re.M))
    assert n_checks >= 3, f"{nb.name}: {n_checks} asserted checks, expected at least 3"
    md = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    assert "{footbibliography}" in md, f"{nb.name}: no references section"


def test_landing_page_maps_all_35_posts_and_links_every_chapter():
    intro = (BOOK / "intro.md").read_text()
    posts = set(re.findall(r"https://kexue\.fm/archives/(\d+)", intro))
    # 35 posts; two chapters also cite the earlier post they build on (8265, 7695).
    assert len(posts - {"8265", "7695"}) == 35, sorted(posts)
    for nb in _chapters():
        rel = nb.relative_to(BOOK).as_posix()
        assert f"]({rel})" in intro, f"intro.md does not link the chapter {rel}"


def test_bibliography_has_one_entry_per_work():
    from pybtex.database import parse_file  # Sphinx's own BibTeX parser: syntax errors fail here

    parse_file(str(BOOK / "references.bib"))
    bib = (BOOK / "references.bib").read_text()
    keys = re.findall(r"^@\w+\{([^,]+),", bib, re.M)
    assert len(keys) == len(set(keys)), sorted(k for k in keys if keys.count(k) > 1)
    ids = []  # the identifiers of each entry, once per entry
    for entry in re.split(r"^@", bib, flags=re.M)[1:]:
        found = re.findall(r"(?:url\s*=\s*\{|eprint\s*=\s*\{|arXiv:)([^}\s]+)", entry)
        ids += sorted({f.removeprefix("https://arxiv.org/abs/") for f in found})
    dup = sorted({i for i in ids if ids.count(i) > 1})
    assert dup == [], f"the same work under several keys: {dup}"


@pytest.mark.parametrize("nb", _chapters(), ids=lambda p: p.stem)
def test_chapter_set_up_and_seeding_follow_the_house_style(nb):
    """The set-up cell imports kexue_lib and picks the device; randomness goes through generators or
    kexue_lib.seeded, never a global seed that later cells silently depend on."""
    cells = [c for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"]
    setup = "".join(cells[0]["source"])
    assert "import kexue_lib" in setup and re.search(r"^device = ", setup, re.M), (
        f"{nb.name}: the first code cell should import kexue_lib and set the device "
        "(kexue_lib.default_device(), or the CPU with a comment saying why)"
    )
    code = "\n".join("".join(c["source"]) for c in cells)
    bad = re.findall(r"torch\.manual_seed\(|np\.random\.seed\(|torch\.random\.seed\(", code)
    assert bad == [], f"{nb.name}: global seeding {bad}; use a generator or kexue_lib.seeded(seed)"
