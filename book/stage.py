"""Execute each chapter once, then lay out a source tree for Jupyter Book to render as is.

Used by book/build.sh (and so by tests/run.sh). Two steps:

1. ``execute``: every chapter listed in _toc.yml whose notebook, kexue_lib or environment changed
   since its last execution is copied to ``.kexue/executed/`` and executed there by
   ``pytest --nbmake --overwrite`` with the budget plugin (tests/nb_budget.py), which takes the
   machine's calibration and times each chapter. Chapters that are up to date are not re-run.
   With ``--clean`` every chapter is executed.
2. ``stage``: ``.kexue/stage/`` receives _config.yml (with execution off), _toc.yml and book/,
   the chapters replaced by their executed copies, and the execution-statistics page filled in
   from the timings. ``jupyter-book build .kexue/stage --path-output .`` then renders the
   notebooks nbmake executed: each chapter runs once per command, and what the book shows is
   what the test judged.

nbmake skips any path containing ``_build``, hence the separate ``.kexue/`` folder.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
WORK = ROOT / ".kexue"
EXECUTED = WORK / "executed"
STAGE = WORK / "stage"
TIMINGS = EXECUTED / "timings.json"
STATS_PAGE = "book/execution-statistics.md"
STATS_MARKER = "<!-- execution statistics: filled in by book/stage.py -->"


def toc_notebooks() -> list[str]:
    """Every chapter notebook that _toc.yml lists, as a repository-relative path."""
    files = re.findall(r"file:\s*(\S+)", (ROOT / "_toc.yml").read_text())
    return [f + ".ipynb" for f in files if (ROOT / (f + ".ipynb")).exists()]


def library_hash() -> str:
    """kexue_lib, the environment stamp and the pinned versions: a change re-executes chapters."""
    h = hashlib.sha256()
    for p in sorted((ROOT / "kexue_lib").rglob("*.py")):
        h.update(p.relative_to(ROOT).as_posix().encode() + b"\0" + p.read_bytes())
    for extra in (pathlib.Path(sys.prefix) / ".kexue-stamp", ROOT / "requirements.lock"):
        if extra.exists():
            h.update(extra.read_bytes())
    h.update(os.environ.get("KEXUE_SIZE", "").encode())
    return h.hexdigest()[:16]


def _key(rel: str, lib: str) -> str:
    return hashlib.sha256((ROOT / rel).read_bytes() + lib.encode()).hexdigest()[:16]


def execute(clean: bool) -> int:
    lib = library_hash()
    notebooks = toc_notebooks()
    if clean and EXECUTED.exists():
        shutil.rmtree(EXECUTED)
    EXECUTED.mkdir(parents=True, exist_ok=True)
    stale = []
    for rel in notebooks:
        out, stamp = EXECUTED / rel, EXECUTED / (rel + ".key")
        if not (out.exists() and stamp.exists() and stamp.read_text() == _key(rel, lib)):
            stale.append(rel)
    old = json.loads(TIMINGS.read_text()) if TIMINGS.exists() else {"chapters": {}}
    if not stale:
        print(f"kexue: all {len(notebooks)} chapters up to date (nothing to execute)")
        return 0
    print(f"kexue: executing {len(stale)} of {len(notebooks)} chapters")
    for rel in stale:
        (EXECUTED / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / rel, EXECUTED / rel)
        (EXECUTED / (rel + ".key")).unlink(missing_ok=True)
    new_json = WORK / "timings-new.json"
    new_json.unlink(missing_ok=True)
    env = dict(os.environ, KEXUE_TIMINGS_JSON=str(new_json))
    env.setdefault("KEXUE_BUDGET", "report")
    cmd = [
        sys.executable, "-m", "pytest", "-q", "-p", "tests.nb_budget", "-p", "no:cacheprovider",
        "--nbmake", "--overwrite", "--nbmake-timeout=300", "--rootdir", str(ROOT),
        *(str(EXECUTED / rel) for rel in stale),
    ]  # fmt: skip
    rc = subprocess.call(cmd, cwd=ROOT, env=env)
    if new_json.exists():
        new = json.loads(new_json.read_text())
        chapters = {k: v for k, v in old["chapters"].items() if k in notebooks}
        for path, v in new["chapters"].items():
            rel = pathlib.Path(path).resolve().relative_to(EXECUTED).as_posix()
            chapters[rel] = dict(v, calibration_s=new["calibration_s"], measured=new["measured"])
        TIMINGS.write_text(json.dumps(dict(new, chapters=chapters), indent=1) + "\n")
    if rc == 0:
        for rel in stale:
            (EXECUTED / (rel + ".key")).write_text(_key(rel, lib))
    return rc


def _stats_markdown() -> str:
    if not TIMINGS.exists():
        return "*No chapter has been executed yet.*\n"
    t = json.loads(TIMINGS.read_text())
    titles = {}
    for rel in t["chapters"]:
        nb = json.loads((ROOT / rel).read_text()) if (ROOT / rel).exists() else {"cells": []}
        first = next((c for c in nb["cells"] if c["cell_type"] == "markdown"), None)
        m = re.match(r"#\s+(.+)", "".join(first["source"])) if first else None
        titles[rel] = m.group(1).strip() if m else rel
    rows = sorted(t["chapters"].items(), key=lambda kv: -kv[1]["wall_s"])
    lines = [
        f"Last measured on **{t['machine']}**, {t['measured']}.",
        "",
        f"Calibration (a fixed workload: kernel start, the usual imports, a little torch training "
        f"and one figure): **{t['calibration_s']:.2f} s** on this machine against "
        f"{t['calibration_ref_s']:.2f} s on the reference machine, so a chapter's budget of "
        f"{t['budget_ref_s']:.0f} s there is **{t['budget_s']:.1f} s** here.",
        "",
        "| chapter | wall time (s) | share of budget | status |",
        "|---|---:|---:|---|",
    ]
    for rel, v in rows:
        page = rel.removeprefix("book/")  # relative to book/execution-statistics.md
        status = "within budget" if v["ok"] else "over budget"
        lines.append(
            f"| [{titles[rel]}]({page}) | {v['wall_s']:.1f} | {v['share']:.0%} | {status} |"
        )
    total = sum(v["wall_s"] for _, v in rows)
    lines += ["", f"{len(rows)} chapters, {total:.0f} s in all (kernel starts included)."]
    return "\n".join(lines) + "\n"


def stage() -> None:
    if STAGE.exists():
        shutil.rmtree(STAGE)
    STAGE.mkdir(parents=True)
    shutil.copytree(
        ROOT / "book", STAGE / "book", ignore=shutil.ignore_patterns("*.ipynb", "stage.py")
    )
    shutil.copyfile(ROOT / "_toc.yml", STAGE / "_toc.yml")
    config = (ROOT / "_config.yml").read_text()
    config, n = re.subn(r"execute_notebooks:\s*\S+", 'execute_notebooks: "off"', config)
    assert n == 1, "_config.yml: expected one execute_notebooks setting"
    (STAGE / "_config.yml").write_text(config)
    missing = []
    for rel in toc_notebooks():
        src = EXECUTED / rel
        if not src.exists():
            missing.append(rel)
            continue
        (STAGE / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, STAGE / rel)
    if missing:
        raise SystemExit(f"kexue: chapters not executed (run the execute step): {missing}")
    stats = (STAGE / STATS_PAGE).read_text()
    assert STATS_MARKER in stats, f"{STATS_PAGE}: expected the marker {STATS_MARKER!r}"
    (STAGE / STATS_PAGE).write_text(stats.replace(STATS_MARKER, _stats_markdown()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("step", choices=["execute", "stage"])
    ap.add_argument("--clean", action="store_true", help="execute every chapter from scratch")
    args = ap.parse_args(argv)
    if args.step == "execute":
        return execute(args.clean)
    stage()
    return 0


if __name__ == "__main__":
    sys.exit(main())
