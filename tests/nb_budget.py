"""pytest plugin: fail any nbmake notebook whose execution wall time exceeds the chapter budget.

Loaded with ``-p tests.nb_budget``. The budget (default 20 s, kernel start included, as nbmake
measures it) comes from ``KEXUE_CHAPTER_BUDGET_S``. Prints every notebook's time at the end.
"""

from __future__ import annotations

import os

import pytest

BUDGET_S = float(os.environ.get("KEXUE_CHAPTER_BUDGET_S", "20"))
_times: dict[str, float] = {}


def _is_notebook(item) -> bool:
    return str(getattr(item, "path", "")).endswith(".ipynb")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if call.when != "call" or not _is_notebook(item):
        return
    name = item.path.name
    _times[name] = call.duration
    if report.passed and call.duration > BUDGET_S:
        report.outcome = "failed"
        report.longrepr = (
            f"{name} executed in {call.duration:.1f} s, over the chapter budget "
            f"of {BUDGET_S:.0f} s (kernel start included)"
        )


def pytest_terminal_summary(terminalreporter):
    if not _times:
        return
    terminalreporter.section(f"chapter wall times (budget {BUDGET_S:.0f} s)")
    for name, t in sorted(_times.items(), key=lambda kv: -kv[1]):
        terminalreporter.write_line(f"{t:6.1f} s  {name}")
