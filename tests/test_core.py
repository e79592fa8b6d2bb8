"""kexue_lib._core: devices, generators, seeding, validation; and the package's import rules."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest
import torch

import kexue_lib
from kexue_lib import _core
from tests.conftest import ROOT


def test_default_device_follows_cuda_and_env(monkeypatch):
    monkeypatch.delenv("KEXUE_DEVICE", raising=False)
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert kexue_lib.default_device().type == want
    monkeypatch.setenv("KEXUE_DEVICE", "cpu")
    assert kexue_lib.default_device() == torch.device("cpu")


def test_make_generator_is_reproducible_and_independent_of_global_state():
    a = torch.randn(5, generator=kexue_lib.make_generator(3))
    torch.manual_seed(123)
    b = torch.randn(5, generator=kexue_lib.make_generator(3))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(TypeError, match="seed"):
        kexue_lib.make_generator(1.5)


def test_seeded_restores_the_global_rng():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    with kexue_lib.seeded(42):
        inside = torch.rand(3)
    after = torch.rand(3)
    torch.testing.assert_close(after, expected, rtol=0, atol=0)
    with kexue_lib.seeded(42):
        torch.testing.assert_close(torch.rand(3), inside, rtol=0, atol=0)


def test_size_for_device(monkeypatch):
    monkeypatch.setenv("KEXUE_SIZE", "gpu")
    assert kexue_lib.size_for_device(1, 2) == 2
    monkeypatch.setenv("KEXUE_SIZE", "cpu")
    assert kexue_lib.size_for_device(1, 2) == 1
    monkeypatch.delenv("KEXUE_SIZE")
    assert kexue_lib.size_for_device(1, 2, device="cpu") == 1
    monkeypatch.setenv("KEXUE_SIZE", "huge")
    with pytest.raises(ValueError, match="KEXUE_SIZE"):
        kexue_lib.size_for_device(1, 2)


def test_to_numpy64():
    x = kexue_lib.to_numpy64(torch.tensor([1.5, 2.0], dtype=torch.bfloat16))
    assert x.dtype.name == "float64" and x.tolist() == [1.5, 2.0]


@pytest.mark.parametrize(
    "bad, exc",
    [
        (0, ValueError),
        (-1.0, ValueError),
        (float("nan"), ValueError),
        (float("inf"), ValueError),
        ("1", TypeError),
        (True, TypeError),
    ],
)
def test_check_positive_rejects(bad, exc):
    with pytest.raises(exc, match="tau"):
        _core.check_positive("tau", bad)


def test_check_positive_accepts_and_integer_mode():
    assert _core.check_positive("tau", 1e-30) == 1e-30
    assert _core.check_positive("n", 0, strict=False, integer=True) == 0
    with pytest.raises(TypeError, match="n"):
        _core.check_positive("n", 2.0, integer=True)


def test_check_probability_dim_even_shape():
    assert _core.check_probability("eps", 0.5) == 0.5
    with pytest.raises(ValueError, match=r"eps.*\(0, 1\).*1.0"):
        _core.check_probability("eps", 1.0)
    assert _core.check_dim_even("d", 8) == 8
    with pytest.raises(ValueError, match="d: expected a positive even size, got 7"):
        _core.check_dim_even("d", 7)
    x = torch.zeros(2, 3)
    assert _core.check_shape("x", x, (None, 3)) is x
    with pytest.raises(ValueError, match=r"x: expected shape \(\*, 4\), got \(2, 3\)"):
        _core.check_shape("x", x, (None, 4))


def test_check_simplex():
    p = torch.tensor([[0.2, 0.8], [0.5, 0.5]])
    assert _core.check_simplex("p", p) is p
    with pytest.raises(ValueError, match="p: expected probabilities summing to 1"):
        _core.check_simplex("p", torch.tensor([0.2, 0.7]))
    with pytest.raises(ValueError, match="non-negative"):
        _core.check_simplex("p", torch.tensor([-0.2, 1.2]))
    with pytest.raises(TypeError, match="p"):
        _core.check_simplex("p", [0.5, 0.5])


# --------------------------------------------------------------------------- import rules

PLOTTING = {"matplotlib", "ipywidgets", "IPython", "tqdm"}


def _imports(path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_only_widgets_import_plotting_and_nothing_imports_tests_or_book():
    for path in (ROOT / "kexue_lib").rglob("*.py"):
        rel = path.relative_to(ROOT / "kexue_lib").as_posix()
        names = _imports(path)
        assert not names & {"tests", "book"}, f"{rel} imports the tests or the book"
        if not rel.startswith("widgets/"):
            assert not names & PLOTTING, f"{rel} imports {names & PLOTTING}"
        if not rel.startswith(("widgets/", "synthetic/")) and rel != "_core.py":
            # data generators are imported only by widgets, tests and chapters
            tree = ast.parse(path.read_text())
            mods = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
            assert not any(m.startswith("kexue_lib.synthetic") for m in mods), rel


def test_importing_the_library_leaves_matplotlib_unloaded():
    mods = sorted(p.stem for p in (ROOT / "kexue_lib").glob("*.py") if not p.stem.startswith("__"))
    code = (
        "import sys\n"
        + "".join(f"import kexue_lib.{m}\n" for m in mods)
        + "bad = [m for m in ('matplotlib', 'ipywidgets', 'scipy') if m in sys.modules]\n"
        + "print(','.join(bad))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    ).stdout.strip()
    assert out == "", f"importing kexue_lib modules loaded: {out} (import them lazily)"


def test_check_int_and_choice():
    assert _core.check_int("heads", 4) == 4
    assert _core.check_int("k", 0, minimum=0) == 0
    with pytest.raises(TypeError, match="heads: expected an int, got float"):
        _core.check_int("heads", 4.0)
    with pytest.raises(TypeError, match="heads"):
        _core.check_int("heads", True)
    with pytest.raises(ValueError, match="heads: expected an int >= 1, got 0"):
        _core.check_int("heads", 0)
    assert _core.check_choice("pos", "rope", ("rope", "learned")) == "rope"
    with pytest.raises(
        ValueError, match=r"pos: expected one of \['rope', 'learned'\], got 'alibi'"
    ):
        _core.check_choice("pos", "alibi", ("rope", "learned"))
