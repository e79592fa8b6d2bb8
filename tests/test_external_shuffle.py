"""External-memory line shuffle: nothing lost, memory held, faults cleaned up, exact uniformity.

References: sorted line lists (multisets), brute-force enumeration of every column and row
shuffle, scipy.stats.chisquare against the uniform law over all n! permutations, GNU-free
byte comparisons; faults simulated by a full disk, a low open-file limit, SIGTERM and SIGKILL.
"""

from __future__ import annotations

import errno
import itertools
import math
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare

from kexue_lib import external_shuffle as X

MODULE = Path(X.__file__)
ROOT = MODULE.parent.parent


def lines_of(data: bytes) -> list[bytes]:
    """The tool's line convention: up to and including b'\\n'; a final fragment gets one."""
    parts = data.split(b"\n")
    last = parts.pop()
    out = [p + b"\n" for p in parts]
    if last:
        out.append(last + b"\n")
    return out


def output_lines(path) -> list[bytes]:
    data = Path(path).read_bytes()
    assert data == b"" or data.endswith(b"\n")
    return lines_of(data)


def leftovers(*dirs) -> list[str]:
    return sorted(
        p.name
        for d in dirs
        for p in Path(d).iterdir()
        if p.name.startswith(".kexue-shuffle-") or p.name.endswith(".partial")
    )


def perm_counts(rows: np.ndarray, n: int) -> np.ndarray:
    """Counts of each of the n! permutations (lexicographic order) among the rows."""
    index = {p: i for i, p in enumerate(itertools.permutations(range(n)))}
    counts = np.zeros(len(index), dtype=np.int64)
    for row in map(tuple, rows.tolist()):
        counts[index[row]] += 1
    return counts


def brute_force_round_robin(sizes) -> set[tuple[int, ...]]:
    """Every output of the post's merge: all column shuffles times all round orders."""
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).tolist()
    cols = [[tuple(s + q for q in p) for p in itertools.permutations(range(n))] for s, n in
            zip(starts, sizes)]  # fmt: skip
    rounds = [[c for c, n in enumerate(sizes) if n > r] for r in range(max(sizes))]
    out = set()
    for col_choice in itertools.product(*cols):
        for orders in itertools.product(*[list(itertools.permutations(a)) for a in rounds]):
            out.add(tuple(col_choice[c][r] for r, order in enumerate(orders) for c in order))
    return out


# ----------------------------------------------------------------------------- arguments
@pytest.mark.parametrize(
    "text, expected",
    [("2G", 2 << 30), ("512M", 512 << 20), ("1.5g", 3 << 29), ("3000KiB", 3000 << 10),
     (" 4 MB ", 4 << 20), ("1048576", 1 << 20), (1 << 21, 1 << 21)],
)  # fmt: skip
def test_parse_memory(text, expected):
    assert X.parse_memory(text) == expected


@pytest.mark.parametrize("bad", ["abc", "", "0", "12X", "-1G", "1e9", 0, 100, "512K"])
def test_parse_memory_rejects(bad):
    with pytest.raises(ValueError, match=r"^memory\b"):
        X.parse_memory(bad)


def test_parse_memory_types():
    for bad in (True, 1.5, None):
        with pytest.raises(TypeError, match=r"^memory\b"):
            X.parse_memory(bad)


def test_library_bad_input(tmp_path):
    src = tmp_path / "in"
    src.write_bytes(b"a\nb\n")
    out = tmp_path / "out"
    with pytest.raises(FileNotFoundError, match=r"^inputs\b.*nope"):
        X.external_shuffle([tmp_path / "nope"], out)
    with pytest.raises(ValueError, match=r"^inputs\b"):
        X.external_shuffle([], out)
    with pytest.raises(ValueError, match=r"^inputs\b.*directory"):
        X.external_shuffle([tmp_path], out)
    with pytest.raises(ValueError, match=r"^merge\b"):
        X.external_shuffle([src], out, merge="random")
    with pytest.raises(ValueError, match=r"^memory\b"):
        X.external_shuffle([src], out, memory="0")
    with pytest.raises(FileNotFoundError, match=r"^output\b"):
        X.external_shuffle([src], tmp_path / "no-dir" / "out")
    with pytest.raises(ValueError, match=r"^output\b"):
        X.external_shuffle([src], tmp_path)
    with pytest.raises(FileNotFoundError, match=r"^tmpdir\b"):
        X.external_shuffle([src], out, tmpdir=tmp_path / "no-dir")
    with pytest.raises(ValueError, match=r"^fan_in\b"):
        X.external_shuffle([src], out, fan_in=1)
    with pytest.raises(ValueError, match=r"^max_chunk_lines\b"):
        X.external_shuffle([src], out, max_chunk_lines=0)
    for bad in ([], [2, -1], [[1, 2]], [1.5]):
        with pytest.raises(ValueError, match=r"^chunk_sizes\b"):
            X.shuffle_indices(bad)
    with pytest.raises(ValueError, match=r"^draws\b"):
        X.simulate_shuffles([2, 2], "exact", 0)
    with pytest.raises(ValueError, match=r"^method\b"):
        X.measure_shuffle("sort", src, out)
    assert not out.exists() and leftovers(tmp_path) == []


def test_line_longer_than_memory(tmp_path):
    src = tmp_path / "in"
    src.write_bytes(b"short\n" + b"x" * (3 << 20) + b"\nshort\n")
    with pytest.raises(ValueError, match=r"^memory\b.*raise --memory"):
        X.external_shuffle([src], tmp_path / "out", memory="1M")
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


# ----------------------------------------------------------------------------- nothing lost
EDGE = (
    b"plain\n\n\ncrlf line\r\n\r\nlone \r inside\n"
    + "unicode \u00e9\u4e2d\n".encode()
    + b"latin-1 \xe9\xff\xfe not utf-8\n\x00\x00\ntrailing nul\x00\n\n"
)


@pytest.mark.parametrize("merge", ["exact", "round-robin"])
@pytest.mark.parametrize("chunk", [1, 3, None])
def test_edge_case_bytes_survive(tmp_path, merge, chunk):
    a, b, c, d = (tmp_path / n for n in "abcd")
    a.write_bytes(EDGE + b"no final newline")  # its last line gets a b'\n'
    b.write_bytes(b"")  # an empty file adds nothing
    c.write_bytes(b"\n")  # one empty line
    d.write_bytes(b"x\r\ny\r\n" * 5 + b"\xff last")
    out = tmp_path / "out"
    rep = X.external_shuffle([a, b, c, d], out, merge=merge, seed=3, max_chunk_lines=chunk)
    want = sorted(lines_of(a.read_bytes()) + [b"\n"] + lines_of(d.read_bytes()))
    assert sorted(output_lines(out)) == want
    assert rep.lines == len(want) and rep.bytes_out == out.stat().st_size
    # the only bytes added are the newlines of the two unterminated last lines
    assert rep.bytes_out == rep.bytes_in + 2
    assert leftovers(tmp_path) == []


@settings(max_examples=40, deadline=None)
@given(
    files=st.lists(st.binary(max_size=300), min_size=1, max_size=3),
    chunk=st.one_of(st.none(), st.integers(1, 7)),
    merge=st.sampled_from(["exact", "round-robin"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_any_bytes_keep_their_lines(files, chunk, merge, seed):
    """Property: for any bytes, the output is the multiset of input lines, each ending in b'\\n'."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        paths = []
        for i, data in enumerate(files):
            paths.append(Path(d) / f"in{i}")
            paths[-1].write_bytes(data)
        rep = X.external_shuffle(paths, Path(d) / "out", seed=seed, merge=merge,
                                 max_chunk_lines=chunk)  # fmt: skip
        want = sorted(line for data in files for line in lines_of(data))
        assert sorted(output_lines(Path(d) / "out")) == want and rep.lines == len(want)
        assert leftovers(d) == []


def test_empty_inputs_give_empty_output(tmp_path):
    (tmp_path / "e").write_bytes(b"")
    rep = X.external_shuffle([tmp_path / "e"], tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == b"" and rep.lines == 0


def test_crlf_only_and_single_line(tmp_path):
    src = tmp_path / "in"
    src.write_bytes(b"only line, no newline\r")
    X.external_shuffle([src], tmp_path / "out", seed=0)
    assert (tmp_path / "out").read_bytes() == b"only line, no newline\r\n"


def test_seed_reproducible_and_output_may_replace_input(tmp_path):
    src = tmp_path / "in"
    src.write_bytes(b"".join(b"%d\n" % i for i in range(2000)))
    o1, o2, o3 = (tmp_path / f"o{i}" for i in range(3))
    X.external_shuffle([src], o1, seed=7, max_chunk_lines=300)
    X.external_shuffle([src], o2, seed=7, max_chunk_lines=300)
    X.external_shuffle([src], o3, seed=8, max_chunk_lines=300)
    assert o1.read_bytes() == o2.read_bytes() != o3.read_bytes()
    before = sorted(output_lines(src))
    X.external_shuffle([src], src, seed=1, max_chunk_lines=300)  # in place: read fully first
    assert sorted(output_lines(src)) == before and src.read_bytes() != o1.read_bytes()


def make_corpus(path: Path, n_lines: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    lens = rng.integers(0, 160, n_lines)
    alphabet = np.frombuffer(b"abcdefghij \t\xe9\xff\r", dtype=np.uint8)
    body = rng.choice(alphabet, int(lens.sum()))
    ends = np.cumsum(lens)
    data = [b"%d\t" % i + body[e - n : e].tobytes() + b"\n" for i, (n, e) in
            enumerate(zip(lens.tolist(), ends.tolist()))]  # fmt: skip
    path.write_bytes(b"".join(data))


def test_file_several_times_the_memory_cap(tmp_path):
    """6x the cap: peak Python heap (tracemalloc, in a fresh process) stays under the cap."""
    src = tmp_path / "big"
    make_corpus(src, 70_000)
    size = src.stat().st_size
    cap = 1 << 20
    assert size > 5 * cap
    for merge in ("exact", "round-robin"):
        m = X.measure_shuffle(merge, src, tmp_path / "out", memory=cap, trace=True)
        assert 0 < m["traced_peak"] <= cap, m
        assert m["rss_growth"] < cap + (6 << 20), m  # the allocator keeps some freed pages
        got = output_lines(tmp_path / "out")
        assert sorted(got) == sorted(lines_of(src.read_bytes()))
        assert got != lines_of(src.read_bytes())
    rep = X.external_shuffle([src], tmp_path / "out", memory=cap, seed=0)
    assert rep.chunks >= 6 and rep.merge_passes == 1


def test_multi_pass_merge_under_low_open_file_limit(tmp_path):
    """ulimit -n too low for all chunks: exact merges in passes, round-robin says why it stops."""
    src = tmp_path / "in"
    src.write_bytes(b"".join(b"line %d\n" % i for i in range(400)))
    script = textwrap.dedent(
        f"""
        import importlib.util, resource, sys
        spec = importlib.util.spec_from_file_location("external_shuffle", {str(MODULE)!r})
        X = importlib.util.module_from_spec(spec); sys.modules["external_shuffle"] = X
        spec.loader.exec_module(X)
        resource.setrlimit(resource.RLIMIT_NOFILE, (20, 20))
        rep = X.external_shuffle([{str(src)!r}], {str(tmp_path / "out")!r}, seed=0,
                                 max_chunk_lines=10)
        print(rep.chunks, rep.merge_passes, rep.fan_in)
        try:
            X.external_shuffle([{str(src)!r}], {str(tmp_path / "rr")!r}, seed=0,
                               max_chunk_lines=10, merge="round-robin")
        except OSError as e:
            print("RR", e.errno, e)
        """
    )
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    first, rr = res.stdout.strip().splitlines()
    chunks, passes, fan_in = map(int, first.split())
    assert 2 <= fan_in < 40 and passes >= 2 and chunks == 40
    assert sorted(output_lines(tmp_path / "out")) == sorted(lines_of(src.read_bytes()))
    assert rr.startswith(f"RR {errno.EMFILE}") and "too many chunk files" in rr
    assert "ulimit -n" in rr and "--merge exact" in rr
    assert not (tmp_path / "rr").exists() and leftovers(tmp_path) == []


def test_unexpected_emfile_is_explained_and_cleaned(tmp_path, monkeypatch):
    src = tmp_path / "in"
    src.write_bytes(b"".join(b"line %d\n" % i for i in range(100)))
    real = X._ChunkReader
    opened = []

    def flaky(path, read_size):
        if len(opened) == 3:
            raise OSError(errno.EMFILE, "Too many open files")
        opened.append(path)
        return real(path, read_size)

    monkeypatch.setattr(X, "_ChunkReader", flaky)
    with pytest.raises(OSError, match=r"too many open files: could open 3 of 10 chunk files"):
        X.external_shuffle([src], tmp_path / "out", max_chunk_lines=10)
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


@pytest.mark.skipif(shutil.which("shuf") is None, reason="GNU shuf is not installed")
def test_measure_shuf_and_in_memory(tmp_path):
    src = tmp_path / "in"
    make_corpus(src, 20_000)
    size = src.stat().st_size
    want = sorted(lines_of(src.read_bytes()))
    for method in ("shuf", "python-in-memory"):
        m = X.measure_shuffle(method, src, tmp_path / "out", trace=True)
        assert sorted(output_lines(tmp_path / "out")) == want
        assert m["mb_per_s"] > 0 and m["rss_growth"] > 0.5 * size  # holds the whole file
        assert (m["traced_peak"] is None) == (method == "shuf")


def test_no_room_for_two_open_chunks(tmp_path, monkeypatch):
    src = tmp_path / "in"
    src.write_bytes(b"a\nb\nc\n")
    monkeypatch.setattr(X, "_fan_in", lambda memory, avg: 1)
    with pytest.raises(OSError, match=r"not even two can be open at once.*ulimit -n"):
        X.external_shuffle([src], tmp_path / "out", max_chunk_lines=1)
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_shuffle_in_memory_baseline(tmp_path):
    src = tmp_path / "in"
    src.write_bytes(EDGE + b"tail")
    X.shuffle_in_memory(src, tmp_path / "out", seed=0)
    assert sorted(output_lines(tmp_path / "out")) == sorted(lines_of(src.read_bytes()))


# ----------------------------------------------------------------------------- faults
class FullDisk:
    """A file whose writes fail with ENOSPC once ``budget`` bytes have gone through."""

    def __init__(self, path, bufsize, budget):
        self.f = open(path, "wb", buffering=bufsize)
        self.budget = budget

    def write(self, data):
        self.budget -= len(data)
        if self.budget < 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.f.write(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


@pytest.mark.parametrize("fail_at", ["chunks", "output"])
def test_full_disk_leaves_no_partial_output(tmp_path, monkeypatch, fail_at):
    src = tmp_path / "in"
    src.write_bytes(b"".join(b"row %d\n" % i for i in range(3000)))
    out = tmp_path / "out"
    out.write_bytes(b"previous result\n")
    opened = []

    def fake_open(path, bufsize):
        opened.append(Path(path))
        is_output = Path(path).name.endswith(".partial")
        full = is_output if fail_at == "output" else not is_output and len(opened) >= 3
        return FullDisk(path, bufsize, 1000 if full else 1 << 40)

    monkeypatch.setattr(X, "_open_for_write", fake_open)
    with pytest.raises(OSError, match=r"^\[Errno 28\] no space left on device") as info:
        X.external_shuffle([src], out, max_chunk_lines=500)
    assert info.value.errno == errno.ENOSPC
    msg = str(info.value)
    assert ("the output" if fail_at == "output" else "temporary chunk files") in msg
    assert "--tmpdir" in msg
    assert out.read_bytes() == b"previous result\n"  # the old file is untouched
    assert leftovers(tmp_path) == [] and all(not p.exists() for p in opened)


def test_keyboard_interrupt_cleans_up(tmp_path, monkeypatch):
    src = tmp_path / "in"
    src.write_bytes(b"".join(b"row %d\n" % i for i in range(3000)))

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(X, "_merge", boom)
    with pytest.raises(KeyboardInterrupt):
        X.external_shuffle([src], tmp_path / "out", max_chunk_lines=500)
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def start_on_fifo(tmp_path, module: bool = False):
    """Start the command on a named pipe, feed half the data, wait for its chunk directory."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    entry = ["-m", "kexue_lib.external_shuffle"] if module else [str(MODULE)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, *entry, str(fifo), "-o", str(tmp_path / "out"), "--memory", "1M"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
    writer = open(fifo, "wb")  # blocks until the tool opens the pipe
    writer.write(b"".join(b"line %d\n" % i for i in range(200_000)))
    writer.flush()
    deadline = time.monotonic() + 30
    while not leftovers(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert leftovers(tmp_path), "the tool never started its work directory"
    return proc, writer


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_removes_temporary_files(tmp_path, sig):
    proc, writer = start_on_fifo(tmp_path)
    proc.send_signal(sig)
    rc = proc.wait(timeout=30)
    writer.close()
    assert rc == (143 if sig == signal.SIGTERM else 130)
    assert "no output written" in proc.stderr.read()
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_sigkill_never_leaves_a_partial_output(tmp_path):
    proc, writer = start_on_fifo(tmp_path)
    proc.kill()
    proc.wait(timeout=30)
    writer.close()
    assert not (tmp_path / "out").exists()
    # SIGKILL cannot be caught: its work directory and temp name stay, marked as such
    assert any(n.startswith(".kexue-shuffle-") for n in leftovers(tmp_path))


# ----------------------------------------------------------------------------- command line
def run_cli(*args, module=False):
    entry = ["-m", "kexue_lib.external_shuffle"] if module else [str(MODULE)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, *entry, *map(str, args)], capture_output=True,
                          text=True, env=env)  # fmt: skip


def test_cli_end_to_end_with_progress(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"".join(b"a%d\n" % i for i in range(5000)))
    b.write_bytes(b"".join(b"b%d\r\n" % i for i in range(5000)) + b"b-last")
    out = tmp_path / "out"
    res = run_cli(a, b, "-o", out, "--memory", "1M", "--seed", 5, "--merge", "round-robin",
                  "--tmpdir", tmp_path, "--progress", module=True)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "split+shuffle" in res.stderr and "merge" in res.stderr and "100.0%" in res.stderr
    assert res.stdout == ""
    assert sorted(output_lines(out)) == sorted(lines_of(a.read_bytes() + b.read_bytes()))
    res2 = run_cli(a, b, "-o", tmp_path / "out2", "--memory", "1M", "--seed", 5,
                   "--merge", "round-robin", "--no-progress")  # fmt: skip
    assert res2.returncode == 0 and res2.stderr == ""  # not a terminal: silent
    assert (tmp_path / "out2").read_bytes() == out.read_bytes()


@pytest.mark.parametrize(
    "args, pattern",
    [(["missing.txt"], r"argument IN: no such file: 'missing.txt'"),
     (["{src}", "--memory", "lots"], r"argument --memory: expected a size like 512M"),
     (["{src}", "--memory", "0"], r"argument --memory: expected at least"),
     (["{src}", "--merge", "best"], r"argument --merge: invalid choice"),
     (["{src}", "--seed", "x"], r"argument --seed: invalid int")],
)  # fmt: skip
def test_cli_bad_arguments(tmp_path, args, pattern):
    src = tmp_path / "in"
    src.write_bytes(b"1\n2\n")
    res = run_cli(*[a.format(src=src) for a in args], "-o", tmp_path / "out")
    assert res.returncode == 2 and res.stdout == ""
    assert pattern.split(":")[0] in res.stderr and __import__("re").search(pattern, res.stderr)
    assert not (tmp_path / "out").exists()


def test_cli_runtime_error_exit_1(tmp_path):
    src = tmp_path / "in"
    src.write_bytes(b"1\n2\n")
    res = run_cli(src, "-o", tmp_path / "no-dir" / "out")
    assert res.returncode == 1 and "error: output: directory" in res.stderr


# ----------------------------------------------------------------------------- uniformity
def test_round_robin_count_closed_form_and_sheet_numbers():
    for m, n in [(2, 2), (3, 3), (4, 4), (2, 5)]:
        assert (
            X.round_robin_reachable_count([n] * m)
            == math.factorial(n) ** m * math.factorial(m) ** n
        )
    assert X.round_robin_reachable_count([2, 2]) == 16
    assert X.round_robin_reachable_count([3, 3, 3]) == 46_656  # 12.86 % of 9!
    # m = n = 4: 24^8 has no factor 5, 16! has: no probability c / 24^8 equals 1 / 16!
    assert X.round_robin_reachable_count([4] * 4) == 24**8 and 24**8 % 5 != 0


@pytest.mark.parametrize("sizes", [[2, 2], [2, 1], [3, 3], [2, 2, 1], [3, 2], [1, 1, 1]])
def test_round_robin_count_matches_brute_force(sizes):
    reach = brute_force_round_robin(sizes)
    assert len(reach) == X.round_robin_reachable_count(sizes)
    # ...and every draw of the code lands in the enumerated set
    draws = X.simulate_shuffles(sizes, "round-robin", 2000, seed=1)
    assert set(map(tuple, draws.tolist())) <= reach
    for s in range(50):
        assert tuple(X.shuffle_indices(sizes, "round-robin", seed=s).tolist()) in reach


@settings(max_examples=15, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=1, max_size=3).filter(lambda s: 0 < sum(s) <= 6))
def test_round_robin_count_property(sizes):
    assert len(brute_force_round_robin([s for s in sizes if s])) == (
        X.round_robin_reachable_count(sizes)
    )


def chi2_p(counts: np.ndarray) -> float:
    return float(chisquare(counts).pvalue)


@pytest.mark.parametrize("sizes", [[2, 2], [2, 2, 1], [3, 1, 1]])
def test_exact_merge_uniform_over_all_permutations(sizes):
    L = sum(sizes)
    n_perm = math.factorial(L)
    draws = 200 * n_perm
    # the vectorised sequential-draw implementation
    seq = perm_counts(X.simulate_shuffles(sizes, "exact", draws, seed=11), L)
    assert (seq > 0).all() and chi2_p(seq) > 1e-3
    # the hypergeometric-block label generator of the file tool, blocks of 1, 2 and many
    for block in (1, 2, 64):
        n = 30 * n_perm
        rows = np.stack([X.shuffle_indices(sizes, "exact", seed=s, block=block) for s in range(n)])
        c = perm_counts(rows, L)
        assert (c > 0).all() and chi2_p(c) > 1e-3, (block, c)


@pytest.mark.parametrize("sizes", [[2, 2], [2, 2, 1]])
def test_round_robin_not_uniform_but_uniform_on_its_support(sizes):
    L = sum(sizes)
    draws = X.simulate_shuffles(sizes, "round-robin", 200 * math.factorial(L), seed=5)
    c = perm_counts(draws, L)
    reach = X.round_robin_reachable_count(sizes)
    assert (c > 0).sum() == reach < math.factorial(L)
    assert chi2_p(c) < 1e-12  # against the uniform law on all L! permutations
    assert chi2_p(c[c > 0]) > 1e-3  # uniform over the reachable ones
    # the post's example: the first two outputs never both come from chunk 0
    first_two = draws[:, :2] < sizes[0]
    assert not first_two.all(axis=1).any()


def test_round_robin_positions_uniform_and_adjacency_rate():
    """Every line's position is uniform; same-chunk neighbours occur 1/m as often as uniform."""
    m, n = 4, 5
    draws = X.simulate_shuffles([n] * m, "round-robin", 20_000, seed=2)
    L = m * n
    pos = np.argsort(draws, axis=1)  # pos[d, line] = output position
    for line in (0, 7, 19):
        counts = np.bincount(pos[:, line], minlength=L)
        assert chi2_p(counts) > 1e-3
    same = (draws[:, 1:] // n == draws[:, :-1] // n).mean()
    rr_rate = (n - 1) / (L - 1) / m
    se = math.sqrt(rr_rate * (1 - rr_rate) / draws[:, 1:].size) * 3  # neighbours correlate
    assert abs(same - rr_rate) < 5 * se
    ex = X.simulate_shuffles([n] * m, "exact", 20_000, seed=3)
    same_ex = (ex[:, 1:] // n == ex[:, :-1] // n).mean()
    assert abs(same_ex - (n - 1) / (L - 1)) < 0.01 and same_ex > 3 * same


def test_short_last_chunk_bias():
    """Round-robin pushes a short last chunk to the front; the exact merge does not."""
    sizes = [10, 10, 10, 2]
    L = sum(sizes)
    last = np.arange(30, 32)
    rr = np.isin(X.simulate_shuffles(sizes, "round-robin", 4000, seed=0), last)
    ex = np.isin(X.simulate_shuffles(sizes, "exact", 4000, seed=0), last)
    mean_rr = np.nonzero(rr)[1].mean()
    mean_ex = np.nonzero(ex)[1].mean()
    # round-robin: rounds 0 and 1 hold 4 lines each, slot uniform inside -> mean 3.5
    assert abs(mean_rr - 3.5) < 0.2
    assert abs(mean_ex - (L - 1) / 2) < 0.6
    # the post's rejection patch: the mean is right, the law of the position is not uniform
    rj = X.simulate_shuffles(sizes, "round-robin-rejection", 4000, seed=0)
    assert (np.sort(rj, axis=1) == np.arange(L)).all()
    pos = np.nonzero(np.isin(rj, last))[1]
    assert abs(pos.mean() - (L - 1) / 2) < 0.6
    assert chi2_p(np.bincount(pos, minlength=L)) < 1e-6
    assert chi2_p(np.bincount(np.nonzero(ex)[1], minlength=L)) > 1e-3
    for bad in ([3, 2, 3], [2, 3], [4]):
        with pytest.raises(ValueError, match=r"^chunk_sizes\b"):
            X.simulate_shuffles(bad, "round-robin-rejection", 10)


def test_label_generators():
    rng = np.random.default_rng(0)
    counts = [5, 0, 7, 3]
    for gen in (X.exact_merge_labels, X.round_robin_labels):
        for block in (1, 4, 100):
            labels = np.concatenate(list(gen(counts, rng, block=block)))
            assert np.bincount(labels, minlength=4).tolist() == counts
    rr = np.concatenate(list(X.round_robin_labels(counts, rng, block=2)))
    # rounds: 3 rounds of {0, 2, 3}, 2 of {0, 2}, 2 of {2}
    assert [sorted(rr[i : i + 3]) for i in (0, 3, 6)] == [[0, 2, 3]] * 3
    assert sorted(rr[9:11]) == [0, 2] and sorted(rr[11:13]) == [0, 2] and rr[13:].tolist() == [2, 2]
    with pytest.raises(ValueError, match=r"^block\b"):
        next(X.exact_merge_labels(counts, rng, block=0))


def test_file_tool_exact_multi_pass_is_uniform(tmp_path):
    """The real file tool, four one-line chunks merged two at a time: all 4! orders, uniform."""
    src = tmp_path / "in"
    src.write_bytes(b"0\n1\n2\n3")  # also: the last line gains its newline
    index = {p: i for i, p in enumerate(itertools.permutations(b"0123"))}
    counts = np.zeros(24, dtype=np.int64)
    out = tmp_path / "out"
    for s in range(1200):
        rep = X.external_shuffle([src], out, seed=s, max_chunk_lines=1, fan_in=2)
        counts[index[tuple(out.read_bytes()[::2])]] += 1
    assert rep.merge_passes == 2 and rep.chunks == 4
    assert (counts > 0).all() and chi2_p(counts) > 1e-3
    assert leftovers(tmp_path) == []
