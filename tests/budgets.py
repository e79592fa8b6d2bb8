"""Time budgets relative to the machine: one place for the reference constants.

Machines of the kind that runs this book differ in speed by about 3x, so an absolute time in a
pass/fail test makes CI a lottery. Every budget here is stated on a *reference machine* and
scaled by a calibration measured in the same run: a fixed workload that looks like chapter work
(kernel start, the usual imports, a little torch training, one matplotlib figure) for chapters,
and a fixed figure draw plus PNG for widget redraws.

    budget on this machine = reference budget x (calibration here / calibration on the reference)

So the same code passes on a machine 3x slower, or beside a process competing for the CPU (the
calibration slows down with it), and a chapter that became 1.5x slower relative to the
calibration still fails.

The reference machine is the 2-core machine of the Parts I-II closing note, where every widget
redrew in 33-87 ms and every chapter ran in 4.9-11.2 s. The calibrations did not exist then, so
their reference values are transferred from a machine where both were measured: calibration
there x median over the 13 widgets (or the 12 Part I-II chapters) of (time on the reference
machine / time there). The numbers behind each constant are written next to it.
"""

from __future__ import annotations

import os
import pathlib
import platform
import time

HERE = pathlib.Path(__file__).resolve().parent
CALIBRATION_NOTEBOOK = HERE / "calibration" / "calibration.ipynb"

# --------------------------------------------------------------------------- reference constants
CHAPTER_BUDGET_REF_S = 20.0  # a chapter's wall time on the reference machine, kernel start included
# 2026-12-05: 4.09 s on a machine where the Part I-II chapters that changed least ran 1.05-1.1x
# their reference times (jl-theory 6.4, zoo 5.4, sinusoidal 5.8, performer 7.1 s; reference
# 4.9-6.6 s): 4.09 / 1.08 = 3.8 s. The notebook runs torch on its default threads: beside a
# CPU hog, a single-threaded calibration stayed at 4.07 s while jl-applications went from 6.7 to
# 45 s; with the parallel QR loop the calibration slows as much (4.09 -> 31.8 s, the chapter
# 6.2 -> 48.3 s: ratio 1.51 quiet, 1.52 beside the hog).
CHAPTER_CALIBRATION_REF_S = 3.8  # CALIBRATION_NOTEBOOK executed there (best of several)
REDRAW_BUDGET_REF_S = 0.100  # a live widget redraw there
# 2026-12-05: 73 ms on a machine where the 13 widgets redrew 1.54-1.80x (median 1.64x) slower
# than on the reference machine (e.g. Gumbel 145 vs 87 ms, RoPE 136 vs 82 ms): 73 / 1.64 = 45 ms.
REDRAW_CALIBRATION_REF_S = 0.045  # redraw_calibration_workload() there (best of several)


def scaled_budget(reference_budget_s: float, calibration_s: float, reference_cal_s: float) -> float:
    """The reference budget in units of the calibration, back in seconds on this machine."""
    if calibration_s <= 0 or reference_cal_s <= 0:
        raise ValueError(
            f"calibration_s: expected positive times, got {calibration_s!r} / {reference_cal_s!r}"
        )
    return reference_budget_s * calibration_s / reference_cal_s


def chapter_budget_s(calibration_s: float) -> float:
    """A chapter's budget on this machine. ``KEXUE_CHAPTER_BUDGET_UNITS`` overrides the
    budget in calibration units (the budget test uses it)."""
    units = os.environ.get("KEXUE_CHAPTER_BUDGET_UNITS")
    if units:
        return float(units) * calibration_s
    return scaled_budget(CHAPTER_BUDGET_REF_S, calibration_s, CHAPTER_CALIBRATION_REF_S)


def redraw_budget_s(calibration_s: float) -> float:
    return scaled_budget(REDRAW_BUDGET_REF_S, calibration_s, REDRAW_CALIBRATION_REF_S)


def judge(times_s: dict[str, float], budget_s: float) -> dict[str, dict]:
    """Each chapter's time, its share of the budget, and whether it is within it."""
    return {
        name: {"wall_s": t, "share": t / budget_s, "ok": t <= budget_s}
        for name, t in times_s.items()
    }


# --------------------------------------------------------------------------- chapter calibration


def run_notebook(path: pathlib.Path | str = CALIBRATION_NOTEBOOK) -> float:
    """Wall time of executing a notebook in a fresh kernel, in its folder (as nbmake does);
    the outputs are discarded."""
    import nbformat
    from nbclient import NotebookClient

    path = pathlib.Path(path)
    nb = nbformat.read(path, as_version=4)
    t0 = time.perf_counter()
    NotebookClient(
        nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    return time.perf_counter() - t0


def run_calibration_notebook() -> float:
    """Wall time of executing the calibration notebook in a fresh kernel."""
    return run_notebook(CALIBRATION_NOTEBOOK)


def calibrate_chapters(runs: int | None = None) -> float:
    """Best of ``runs`` executions of the calibration notebook (the first warms disk caches).
    Default 2, or ``KEXUE_CALIBRATION_RUNS``."""
    runs = runs or int(os.environ.get("KEXUE_CALIBRATION_RUNS", "2"))
    return min(run_calibration_notebook() for _ in range(runs))


# --------------------------------------------------------------------------- redraw calibration


def redraw_calibration_workload() -> tuple[float, float]:
    """(wall, CPU) seconds of this process for one fixed redraw-like job: a small torch computation, a two-panel figure
    with a line, an image and text, drawn and encoded as PNG (the work of a widget redraw)."""
    import io

    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np
    import torch

    t0, c0 = time.perf_counter(), time.process_time()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 64, generator=g, dtype=torch.float64)
    gram = torch.softmax(x @ x.T / 8, dim=-1)
    curve = gram.sum(0).cumsum(0).numpy()
    fig, axes = plt.subplots(1, 2, figsize=(7, 3), dpi=80)
    axes[0].plot(np.arange(curve.size), curve, lw=1)
    axes[0].set_title("calibration: curve")
    axes[1].imshow(gram[:64, :64].numpy(), cmap="viridis")
    axes[1].set_title("calibration: image")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return time.perf_counter() - t0, time.process_time() - c0


def calibrate_redraws(repeats: int = 7) -> tuple[float, float]:
    """Best wall and best CPU time of ``repeats`` runs after one warm-up (fonts, caches).

    A redraw is judged on both clocks: its wall time against the wall calibration, its CPU
    time against the CPU calibration. Beside a busy process the wall clock of both slows down;
    the CPU clock of both stays honest."""
    redraw_calibration_workload()
    runs = [redraw_calibration_workload() for _ in range(repeats)]
    return min(w for w, _ in runs), min(c for _, c in runs)


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"
