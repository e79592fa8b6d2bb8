"""Which chapters the test command executes a second time, to check they print the same numbers.

Executing all chapters twice doubles the longest step of the test command, and a chapter's
printed numbers can only change between two runs through its own code or the kexue_lib modules
it imports. So the second execution covers (``KEXUE_DETERMINISM``):

- ``auto`` (default): every chapter whose notebook, or a kexue_lib module it imports by name,
  changed since the base (see :func:`changed_files`; at most ``KEXUE_DETERMINISM_MAX`` = 12 of
  them, picked in rotation), plus a rotating sixth of all chapters keyed on the commit, so that
  over a few commits every chapter is re-run;
- ``all``: every chapter (for a release);
- ``off``: none.

``python tests/determinism.py`` prints the chosen notebooks, one per line, and why on stderr.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from book.stage import toc_notebooks  # noqa: E402

SHARED = {"kexue_lib/__init__.py", "kexue_lib/_core.py"}  # imported by every chapter


def _git(*args: str) -> str:
    r = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
    return r.stdout if r.returncode == 0 else ""


def changed_files() -> set[str]:
    """Files changed since the base, plus uncommitted changes.

    The base is the merge-base with the branch's upstream when the branch is ahead of it (a
    contributor's branch against main); otherwise (a fresh clone, as in CI, where the upstream
    is HEAD itself) the commits of the last 24 hours before HEAD: roughly the submission being
    tested. ``KEXUE_DETERMINISM_BASE=<rev>``
    sets it explicitly.
    """
    base = (
        os.environ.get("KEXUE_DETERMINISM_BASE")
        or _git("merge-base", "HEAD", "@{upstream}").strip()
    )
    if base and base == _git("rev-parse", "HEAD").strip():
        base = ""  # a fresh clone: the upstream is HEAD itself, so it says nothing
    if base:
        names = _git("diff", "--name-only", f"{base}...HEAD")
    else:
        head_time = _git("log", "-1", "--format=%ct").strip()
        since = int(head_time) - 86400 if head_time else 0
        names = _git("log", f"--since={since}", "--name-only", "--format=")
    names += _git("diff", "--name-only", "HEAD")
    return {n.strip() for n in names.splitlines() if n.strip()}


def imported_modules(notebook: str) -> set[str]:
    """kexue_lib module files a chapter imports by name (``from kexue_lib.x import``, ``from
    kexue_lib import x`` where x is a module, ``import kexue_lib.x``)."""
    nb = json.loads((ROOT / notebook).read_text())
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    dotted = set(re.findall(r"kexue_lib((?:\.\w+)+)", code))
    for names in re.findall(r"from kexue_lib import \(?([\w\s,]+)\)?", code):
        dotted |= {"." + n.strip() for n in names.split(",") if n.strip()}
    files = set()
    for d in dotted:
        parts = d.strip(".").split(".")
        for k in range(len(parts), 0, -1):  # the longest prefix that is a module file
            cand = "kexue_lib/" + "/".join(parts[:k])
            if (ROOT / (cand + ".py")).exists():
                files.add(cand + ".py")
                break
            if (ROOT / cand / "__init__.py").exists():
                files.add(cand + "/__init__.py")
                break
    return files


def _rotation(items: list[str], k: int, key: str) -> list[str]:
    if not items or k <= 0:
        return []
    start = int(hashlib.sha256(key.encode()).hexdigest(), 16) % len(items)
    return [items[(start + i) % len(items)] for i in range(min(k, len(items)))]


def select(mode: str | None = None) -> tuple[list[str], dict[str, str]]:
    """The notebooks to execute again and, for each, why."""
    mode = mode or os.environ.get("KEXUE_DETERMINISM", "auto")
    if mode not in ("auto", "all", "off"):
        raise ValueError(f"KEXUE_DETERMINISM: expected 'auto', 'all' or 'off', got {mode!r}")
    notebooks = toc_notebooks()
    if mode == "off":
        return [], {}
    if mode == "all":
        return notebooks, dict.fromkeys(notebooks, "all chapters (KEXUE_DETERMINISM=all)")
    key = _git("rev-parse", "HEAD").strip() or "no-git"
    changed = changed_files()
    why = {}
    touched = []
    for nb in notebooks:
        mods = sorted((imported_modules(nb) - SHARED) & changed)
        if nb in changed or mods:
            touched.append(nb)
            why[nb] = "changed" if nb in changed else "imports changed " + ", ".join(mods)
    cap = int(os.environ.get("KEXUE_DETERMINISM_MAX", "12"))
    chosen = _rotation(touched, cap, key)
    why = {nb: why[nb] for nb in chosen}
    for nb in _rotation(notebooks, math.ceil(len(notebooks) / 6), key + "rotation"):
        why.setdefault(nb, "rotating sample")
    return [nb for nb in notebooks if nb in why], why


if __name__ == "__main__":
    chosen, why = select()
    for nb in chosen:
        print(nb)
        print(f"  {nb}: {why[nb]}", file=sys.stderr)
