"""pytest plugin: judge every nbmake notebook against a budget relative to this machine.

Loaded with ``-p tests.nb_budget``. Before the first notebook runs, the calibration notebook
(tests/calibration/) is executed twice in a fresh kernel; a chapter's budget is the reference
budget scaled by that calibration (tests/budgets.py). When a chapter goes over, the calibration
is taken once more and the chapter judged against the slower of the two, so a machine that got
busier during the run does not fail a chapter; a chapter that is slow relative to the machine
still does.

``KEXUE_BUDGET=report`` only reports (the reader's book build); the default, ``enforce``, fails
an over-budget notebook. ``KEXUE_TIMINGS_JSON=path`` writes the calibration and every chapter's
time and budget share there (the execution-statistics page is made from it).
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib

import pytest

from tests import budgets

_state: dict = {"calibrations": [], "times": {}, "retries": {}}


def _is_notebook(item) -> bool:
    return str(getattr(item, "path", "")).endswith(".ipynb")


def _enforce() -> bool:
    mode = os.environ.get("KEXUE_BUDGET", "enforce")
    if mode not in ("enforce", "report"):
        raise pytest.UsageError(f"KEXUE_BUDGET: expected 'enforce' or 'report', got {mode!r}")
    return mode == "enforce"


def _budget() -> float:
    return budgets.chapter_budget_s(_state["calibrations"][0])


def pytest_collection_finish(session):
    if any(_is_notebook(i) for i in session.items) and not _state["calibrations"]:
        _enforce()  # fail early on a bad KEXUE_BUDGET
        _state["calibrations"].append(budgets.calibrate_chapters())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if call.when != "call" or not _is_notebook(item):
        return
    name = item.path.name
    wall = call.duration
    if report.passed and wall > _budget() and _enforce():
        cal_now = budgets.run_calibration_notebook()  # is the machine busier now?
        retry = budgets.run_notebook(item.path)
        _state["calibrations"].append(cal_now)
        _state["retries"][str(item.path)] = (wall, retry, cal_now)
        wall = min(wall, retry * _state["calibrations"][0] / cal_now)
    _state["times"][str(item.path)] = wall
    budget = _budget()
    if report.passed and wall > budget and _enforce():
        report.outcome = "failed"
        report.longrepr = (
            f"{name} executed in {call.duration:.1f} s, and again in "
            f"{_state['retries'][str(item.path)][1]:.1f} s beside a calibration of "
            f"{_state['retries'][str(item.path)][2]:.2f} s: at best {wall / budget:.0%} of its "
            f"budget of {budget:.1f} s on this machine ({budgets.CHAPTER_BUDGET_REF_S:.0f} s on "
            f"the reference machine, scaled by the calibration {_state['calibrations'][0]:.2f} s "
            f"vs {budgets.CHAPTER_CALIBRATION_REF_S:.2f} s there; kernel start included)"
        )


def _summary() -> dict:
    cal = _state["calibrations"][0]
    budget = _budget()
    return {
        "measured": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": budgets.machine_description(),
        "calibration_s": cal,
        "calibrations_s": _state["calibrations"],
        "calibration_ref_s": budgets.CHAPTER_CALIBRATION_REF_S,
        "budget_ref_s": budgets.CHAPTER_BUDGET_REF_S,
        "budget_s": budget,
        "chapters": budgets.judge(_state["times"], budget),
    }


def pytest_terminal_summary(terminalreporter):
    if not _state["times"]:
        return
    s = _summary()
    terminalreporter.section("chapter wall times (budget relative to this machine)")
    terminalreporter.write_line(
        f"calibration {s['calibration_s']:.2f} s here vs {s['calibration_ref_s']:.2f} s on the "
        f"reference machine: budget {s['budget_s']:.1f} s here "
        f"({s['budget_ref_s']:.0f} s there)  [{s['machine']}]"
    )
    for path, v in sorted(s["chapters"].items(), key=lambda kv: -kv[1]["wall_s"]):
        flag = "" if v["ok"] else "  OVER BUDGET"
        if path in _state["retries"]:
            first, again, cal_now = _state["retries"][path]
            flag += f"  (executed twice: {first:.1f} s; {again:.1f} s beside a {cal_now:.2f} s calibration)"
        terminalreporter.write_line(
            f"{v['wall_s']:6.1f} s  {v['share']:5.0%} of budget  {pathlib.Path(path).name}{flag}"
        )
    out = os.environ.get("KEXUE_TIMINGS_JSON")
    if out:
        pathlib.Path(out).write_text(json.dumps(s, indent=1) + "\n")
