"""The budget check is relative to the machine: it flags a chapter that got slower, not a slower machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import nbformat
import pytest

from tests import budgets
from tests.conftest import ROOT


def test_scaled_budget_follows_the_calibration():
    # On a machine 3x slower every time triples, the calibration too: the verdicts do not move.
    times = {"a": 6.0, "b": 11.0, "c": 19.0, "d": 26.0}
    cal = budgets.CHAPTER_CALIBRATION_REF_S
    here = budgets.judge(times, budgets.chapter_budget_s(cal))
    slow = budgets.judge({k: 3 * t for k, t in times.items()}, budgets.chapter_budget_s(3 * cal))
    assert {k: v["ok"] for k, v in here.items()} == {k: v["ok"] for k, v in slow.items()}
    assert [k for k, v in here.items() if not v["ok"]] == ["d"]
    for k in times:
        assert slow[k]["share"] == pytest.approx(here[k]["share"])
    # A chapter at 70 % of its budget that became 1.5x slower (same machine) fails.
    budget = budgets.chapter_budget_s(cal)
    assert budgets.judge({"x": 0.7 * budget * 1.5}, budget)["x"]["ok"] is False
    assert budgets.redraw_budget_s(budgets.REDRAW_CALIBRATION_REF_S) == pytest.approx(0.1)
    with pytest.raises(ValueError, match=r"^calibration_s\b"):
        budgets.scaled_budget(20.0, 0.0, 1.0)


def _notebook(path, code_cells):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.cells = [nbformat.v4.new_code_cell(c) for c in code_cells]
    nbformat.write(nb, path)


def test_budget_plugin_flags_only_the_slowed_chapter(tmp_path):
    """Three small chapters run under nbmake with the budget plugin. One of them also repeats the
    calibration's own work twelve times: it is about 2.5 calibrations long against a budget of 1.3
    (the others about 0.6), and it alone is flagged, after its second execution."""
    cal = nbformat.read(budgets.CALIBRATION_NOTEBOOK, as_version=4)
    cal_code = [c.source for c in cal.cells if c.cell_type == "code"]
    light = [
        "import matplotlib.pyplot as plt\nimport torch\n\nimport kexue_lib",
        "plt.plot(torch.arange(5).numpy())\nplt.show()",
    ]
    _notebook(tmp_path / "ch_a.ipynb", light)
    _notebook(tmp_path / "ch_b.ipynb", light)
    _notebook(tmp_path / "ch_slowed.ipynb", light + cal_code * 12)
    timings = tmp_path / "timings.json"
    env = dict(
        os.environ,
        KEXUE_CHAPTER_BUDGET_UNITS="1.3",
        KEXUE_CALIBRATION_RUNS="1",
        KEXUE_BUDGET="enforce",
        KEXUE_TIMINGS_JSON=str(timings),
    )
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.nb_budget", "-p", "no:cacheprovider",
         "--nbmake", "--rootdir", str(ROOT), str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "1 failed, 2 passed" in out, out
    assert "ch_slowed.ipynb" in out and "of its budget" in out and "executed twice" in out, out
    s = json.loads(timings.read_text())
    verdicts = {os.path.basename(k): v["ok"] for k, v in s["chapters"].items()}
    assert verdicts == {"ch_a.ipynb": True, "ch_b.ipynb": True, "ch_slowed.ipynb": False}
    assert s["budget_s"] == pytest.approx(1.3 * s["calibration_s"])
