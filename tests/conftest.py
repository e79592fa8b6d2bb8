"""Shared pytest set-up: the CUDA skip marker, seeded generators, built-book options, redraw budgets."""

from __future__ import annotations

import pathlib

import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def gen(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A seeded generator for test inputs (kexue_lib.make_generator, importable by name)."""
    from kexue_lib import make_generator

    return make_generator(seed, device)


@pytest.fixture
def rng() -> torch.Generator:
    """A fresh CPU generator seeded with 0: tests draw their inputs from it, never the global RNG."""
    return gen(0)


def pytest_addoption(parser):
    parser.addoption(
        "--nb-executed-dir",
        default=None,
        help="folder of notebooks executed by nbmake --overwrite (determinism test)",
    )


# --------------------------------------------------------------------------- widget redraws

_redraws: dict[str, tuple[float, float, float]] = {}
_redraw_calibration: list[tuple[float, float]] = []


def redraw_calibration_s() -> tuple[float, float]:
    """This machine's redraw calibration, (wall, CPU) seconds (tests/budgets.py), measured once
    per test run."""
    if not _redraw_calibration:
        from tests import budgets

        _redraw_calibration.append(budgets.calibrate_redraws())
    return _redraw_calibration[0]


def assert_redraws_within_budget(explorer, settings, *, name: str) -> None:
    """A live redraw (compute on a cache miss + draw + rasterise) fits the redraw budget.

    The budget is 100 ms on the reference machine, scaled by a redraw calibration taken in the
    same run (tests/budgets.py). Takes the best of the given control settings after one warm-up
    redraw. Wall time is judged against the wall calibration and CPU time against the CPU
    calibration; a redraw passes when either fits (beside a busy process the wall clock of
    both slows down, the CPU clock stays honest). All times are listed at the end of the run.
    """
    import time

    from tests import budgets

    cal_wall, cal_cpu = redraw_calibration_s()
    budget_wall, budget_cpu = budgets.redraw_budget_s(cal_wall), budgets.redraw_budget_s(cal_cpu)
    explorer.render_seconds(**settings[0])  # warm fonts, text and data caches
    walls, cpus = [], []
    for values in settings:
        c0 = time.process_time()
        walls.append(explorer.render_seconds(**values))
        cpus.append(time.process_time() - c0)
    wall, cpu = min(walls), min(cpus)
    share = min(wall / budget_wall, cpu / budget_cpu)
    _redraws[name] = (wall, cpu, share)
    assert share <= 1, (
        f"{name}: best redraw {wall * 1e3:.0f} ms wall, {cpu * 1e3:.0f} ms CPU; budget "
        f"{budget_wall * 1e3:.0f} ms wall or {budget_cpu * 1e3:.0f} ms CPU on this machine "
        f"(100 ms on the reference machine)"
    )


def pytest_terminal_summary(terminalreporter):
    if _redraws:
        from tests import budgets

        cal_wall, cal_cpu = redraw_calibration_s()
        terminalreporter.section(
            "widget redraw times (best of several; budget relative to this machine)"
        )
        terminalreporter.write_line(
            f"redraw calibration {cal_wall * 1e3:.0f} ms wall, {cal_cpu * 1e3:.0f} ms CPU here vs "
            f"{budgets.REDRAW_CALIBRATION_REF_S * 1e3:.0f} ms on the reference machine: budget "
            f"{budgets.redraw_budget_s(cal_wall) * 1e3:.0f} ms wall or "
            f"{budgets.redraw_budget_s(cal_cpu) * 1e3:.0f} ms CPU here (100 ms there)"
        )
        for name, (wall, cpu, share) in sorted(_redraws.items(), key=lambda kv: -kv[1][2]):
            terminalreporter.write_line(
                f"{wall * 1e3:6.0f} ms wall {cpu * 1e3:6.0f} ms CPU  {share:5.0%} of budget  {name}"
            )
