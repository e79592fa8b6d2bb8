"""Shuffle the lines of files larger than memory: split, shuffle each chunk, merge (numpy + stdlib).

Chapter: book/optimization/external-shuffle.ipynb (post https://kexue.fm/archives/8662).

Pass 1 reads the inputs in large binary blocks and cuts them into chunks that fit the memory
budget; each chunk is permuted in memory (``numpy.random.Generator.permutation``) and written to a
temporary file. Pass 2 merges the chunk files into the output. Two merges:

* ``"exact"`` -- the next line comes from chunk ``c`` with probability ``r_c / sum(r)``, ``r`` the
  lines left in each chunk (eq. external-shuffle-urn). Drawn in blocks: the block's composition is
  one ``multivariate_hypergeometric`` draw from ``r``, its order a uniform shuffle of that multiset;
  this is the same law as line-by-line draws. The output is a uniform random permutation of all
  lines, whatever the chunk sizes. When there are more chunks than can be open at once (memory or
  ``ulimit -n``), groups of chunks are merged first (the merge of uniformly shuffled chunks is a
  uniformly shuffled chunk, so the result stays exact).
* ``"round-robin"`` -- the post's merge: round ``r`` emits the ``r``-th line of every chunk that
  still has one, in a uniformly random order. Every line's position is uniform, but only
  ``prod n_c! * prod_r k_r!`` of the ``L!`` permutations can occur (:func:`round_robin_reachable_count`).

Bytes in, bytes out: lines are never decoded, ``\\r\\n`` and non-UTF-8 bytes are kept. A line is
the bytes up to and including ``\\n``; **a last line without ``\\n`` gets one in the output** (it may
land anywhere, so it must be terminated). The output is written to a temporary name in the
output's directory and ``os.replace``-d at the very end: an interrupted or failed run never leaves
a partial file under the final name (an existing file there is left untouched), and the
temporary chunk directory is removed on errors, ``KeyboardInterrupt`` and (command line) SIGTERM.
Only SIGKILL can leave a ``.kexue-shuffle-*`` directory behind.

Command line::

    python -m kexue_lib.external_shuffle IN... -o OUT --memory 2G [--seed N]
        [--merge exact|round-robin] [--tmpdir DIR] [--progress/--no-progress]
"""

from __future__ import annotations

import argparse
import errno
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path

import numpy as np

__all__ = [
    "LINE_OVERHEAD",
    "MIN_MEMORY",
    "ShuffleReport",
    "exact_merge_labels",
    "external_shuffle",
    "main",
    "measure_shuffle",
    "parse_memory",
    "round_robin_labels",
    "round_robin_reachable_count",
    "shuffle_in_memory",
    "shuffle_indices",
    "simulate_shuffles",
]

MIN_MEMORY = 1 << 20
# bytes per line held in memory besides its payload: bytes header, list slot, index
LINE_OVERHEAD = 72
_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_MAX_BLOCK = 1 << 16  # lines per merge step


# ----------------------------------------------------------------------------- arguments
def parse_memory(memory: int | str) -> int:
    """Bytes from ``memory``: an int, or text like ``"512M"``, ``"2G"``, ``"1.5g"``, ``"3000KiB"``.

    Binary units (K = 1024). At least :data:`MIN_MEMORY` (1 MiB).
    """
    if isinstance(memory, bool):
        raise TypeError(f"memory: expected a size in bytes or text like '2G', got {memory!r}")
    if isinstance(memory, (int, np.integer)):
        value = int(memory)
    elif isinstance(memory, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([KMGT]?)(?:I?B)?\s*", memory.upper())
        if m is None:
            raise ValueError(
                f"memory: expected a size like 512M, 2G or 1048576 (bytes), got {memory!r}"
            )
        value = int(float(m.group(1)) * _UNITS[m.group(2)])
    else:
        raise TypeError(
            f"memory: expected a size in bytes or text like '2G', got {type(memory).__name__}"
        )
    if value < MIN_MEMORY:
        raise ValueError(f"memory: expected at least {MIN_MEMORY} bytes (1M), got {memory!r}")
    return value


def _check_merge(merge: str) -> str:
    name = merge.replace("_", "-") if isinstance(merge, str) else merge
    if name not in ("exact", "round-robin"):
        raise ValueError(f"merge: expected 'exact' or 'round-robin', got {merge!r}")
    return name


def _check_sizes(chunk_sizes) -> np.ndarray:
    sizes = np.asarray(chunk_sizes)
    if sizes.ndim != 1 or sizes.size == 0 or not np.issubdtype(sizes.dtype, np.integer):
        raise ValueError(f"chunk_sizes: expected a non-empty 1-D sequence of ints, got {sizes!r}")
    if (sizes < 0).any():
        raise ValueError(f"chunk_sizes: expected sizes >= 0, got {sizes.tolist()}")
    return sizes.astype(np.int64)


# ----------------------------------------------------------------------------- merge labels
def exact_merge_labels(counts, rng: np.random.Generator, *, block: int = _MAX_BLOCK):
    """Yield arrays of chunk labels: the exact (urn) merge of chunks with ``counts`` lines.

    Each label is drawn with probability proportional to the lines left in its chunk
    (eq. external-shuffle-urn); a block of ``b`` labels is one ``multivariate_hypergeometric``
    composition from the remaining counts, then a uniform shuffle of that multiset.
    """
    remaining = _check_sizes(counts).copy()
    if block < 1:
        raise ValueError(f"block: expected >= 1, got {block}")
    k, total = len(remaining), int(remaining.sum())
    while total > 0:
        b = min(block, total)
        comp = rng.multivariate_hypergeometric(remaining, b) if k > 1 else np.array([b])
        labels = np.repeat(np.arange(k, dtype=np.int64), comp)
        rng.shuffle(labels)
        remaining -= comp
        total -= b
        yield labels


def round_robin_labels(counts, rng: np.random.Generator, *, block: int = _MAX_BLOCK):
    """Yield arrays of chunk labels: the post's merge, round by round.

    Round ``r`` holds every chunk with more than ``r`` lines, in a uniformly random order.
    """
    counts = _check_sizes(counts)
    if block < 1:
        raise ValueError(f"block: expected >= 1, got {block}")
    r = 0
    for level in np.unique(counts[counts > 0]):
        active = np.flatnonzero(counts >= level)  # the chunks of rounds r .. level-1
        while r < level:
            rounds = int(min(level - r, max(1, block // len(active))))
            grid = np.broadcast_to(active, (rounds, len(active)))
            yield rng.permuted(grid, axis=1).ravel()
            r += rounds


def _labels(merge: str, counts, rng, block: int = _MAX_BLOCK):
    if merge == "exact":
        return exact_merge_labels(counts, rng, block=block)
    return round_robin_labels(counts, rng, block=block)


def shuffle_indices(chunk_sizes, merge: str = "exact", *, seed=None, block: int = _MAX_BLOCK):
    """The whole algorithm on line numbers, in memory: ``out[i]`` = input line at output ``i``.

    Chunk ``c`` holds the consecutive lines of size ``chunk_sizes[c]``; the same label
    generators as the file tool (:func:`exact_merge_labels`, :func:`round_robin_labels`).
    """
    merge = _check_merge(merge)
    sizes = _check_sizes(chunk_sizes)
    rng = np.random.default_rng(seed)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    chunks = [s + rng.permutation(int(n)) for s, n in zip(starts, sizes)]
    labels = np.concatenate([np.zeros(0, np.int64), *_labels(merge, sizes, rng, block)])
    out = np.empty(int(sizes.sum()), dtype=np.int64)
    for c, lines in enumerate(chunks):  # chunk c's lines fill its labels' slots in order
        out[labels == c] = lines
    return out


def simulate_shuffles(chunk_sizes, merge: str, draws: int, *, seed=None) -> np.ndarray:
    """``draws`` independent runs at once, shape ``(draws, L)``: an independent implementation.

    Round-robin: shuffled columns, then each round's chunks in random order (argsort of uniform
    keys). Exact: line by line, chunk ``c`` with probability ``r_c / sum(r)`` (inverse CDF), the
    sequential form of eq. external-shuffle-urn. ``"round-robin-rejection"``: the post's patch
    for a short last chunk (equal other chunks): in each round the last chunk takes part with
    probability (its lines left) / (lines left in each other chunk).
    """
    if merge == "round-robin-rejection":
        sizes = _check_sizes(chunk_sizes)
        if len(sizes) < 2 or (sizes[:-1] != sizes[0]).any() or sizes[-1] > sizes[0]:
            raise ValueError(
                "chunk_sizes: the rejection patch expects equal chunks and a last one no larger, "
                f"got {sizes.tolist()}"
            )
    else:
        merge = _check_merge(merge)
        sizes = _check_sizes(chunk_sizes)
    if int(draws) < 1:
        raise ValueError(f"draws: expected >= 1, got {draws}")
    rng = np.random.default_rng(seed)
    k, n_max, total = len(sizes), int(sizes.max()), int(sizes.sum())
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    # column shuffles: cell (c, j) = line starts[c] + perm_c[j]; padded with -1
    keys = rng.random((draws, k, n_max))
    valid = np.arange(n_max)[None, :] < sizes[:, None]
    keys[:, ~valid] = np.inf
    cols = np.argsort(keys, axis=2) + starts[None, :, None]
    cols[:, ~valid] = -1
    if merge == "round-robin":
        rows = np.argsort(rng.random((draws, n_max, k)) + np.where(valid.T, 0.0, 2.0), axis=2)
        grid = np.take_along_axis(cols.transpose(0, 2, 1), rows, axis=2).reshape(draws, -1)
        return grid[grid >= 0].reshape(draws, total)
    idx = np.arange(draws)
    if merge == "round-robin-rejection":
        n = n_max
        left = np.full(draws, int(sizes[-1]))  # lines left in the last chunk
        rounds = []
        for r in range(n):
            accept = (left > 0) & (rng.random(draws) * (n - r) < left)
            vals = cols[:, :, r].copy()
            vals[:, -1] = np.where(accept, cols[idx, -1, np.minimum(sizes[-1] - left, n - 1)], -1)
            order = np.argsort(rng.random((draws, k)) + 2.0 * (vals < 0), axis=1)
            rounds.append(np.take_along_axis(vals, order, axis=1))
            left -= accept
        grid = np.concatenate(rounds, axis=1)
        return grid[grid >= 0].reshape(draws, total)
    out = np.empty((draws, total), dtype=np.int64)
    remaining = np.broadcast_to(sizes, (draws, k)).copy()
    taken = np.zeros((draws, k), dtype=np.int64)
    for t in range(total):
        u = rng.random(draws) * (total - t)
        c = (np.cumsum(remaining, axis=1) <= u[:, None]).sum(axis=1)
        out[:, t] = cols[idx, c, taken[idx, c]]
        taken[idx, c] += 1
        remaining[idx, c] -= 1
    return out


def round_robin_reachable_count(chunk_sizes) -> int:
    """Permutations the round-robin merge can output: ``prod_c n_c! * prod_r k_r!``.

    ``k_r`` is the number of chunks with more than ``r`` lines (the size of round ``r``); for
    ``m`` equal chunks of ``n`` lines, ``(n!)^m (m!)^n`` (eq. external-shuffle-reachable).
    """
    sizes = _check_sizes(chunk_sizes)
    out = 1
    for n in sizes.tolist():
        out *= math.factorial(n)
    for r in range(int(sizes.max())):
        out *= math.factorial(int((sizes > r).sum()))
    return out


# ----------------------------------------------------------------------------- progress
class _Progress:
    """A one-line progress bar on stderr: phase, share done, MB/s."""

    def __init__(self, enabled: bool, stream=None):
        self.enabled, self.stream = enabled, stream or sys.stderr
        self.phase, self.total, self.done, self.t0, self.shown = "", 0, 0, 0.0, 0.0

    def start(self, phase: str, total: int) -> None:
        self.finish()
        self.phase, self.total, self.done = phase, total, 0
        self.t0 = self.shown = time.perf_counter()
        self._show(force=True)

    def update(self, nbytes: int) -> None:
        self.done += nbytes
        if self.enabled and time.perf_counter() - self.shown > 0.2:
            self._show()

    def _show(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        self.shown = now
        rate = self.done / max(now - self.t0, 1e-9) / 1e6
        if self.total > 0:
            frac = min(self.done / self.total, 1.0)
            bar = "#" * int(30 * frac)
            text = f"{self.phase:<14}[{bar:<30}] {100 * frac:5.1f}% {rate:8.1f} MB/s"
        else:
            text = f"{self.phase:<14}{self.done / 1e6:10.1f} MB {rate:8.1f} MB/s"
        self.stream.write("\r" + text)
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled and self.phase:
            self._show(force=True)
            self.stream.write("\n")
            self.stream.flush()
        self.phase = ""


# ----------------------------------------------------------------------------- file helpers
def _open_for_write(path, bufsize: int):
    """Open ``path`` for binary writing (one place, so tests can simulate a full disk)."""
    return open(path, "wb", buffering=bufsize)


def _fsync(path) -> None:
    """Flush a file's (or a directory's) data to the disk; best effort where not supported."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. directories on Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - file systems without fsync
        pass
    finally:
        os.close(fd)


def _no_space(exc: OSError, what: str, where, need: int) -> OSError:
    if exc.errno == errno.ENOSPC:
        return OSError(
            errno.ENOSPC,
            f"no space left on device while writing {what} in {where}: the shuffle needs about "
            f"{need} bytes free there; free some space or pass --tmpdir (tmpdir=) on another disk",
        )
    return exc


class _ChunkReader:
    """Lines of one chunk file (every line ends with a newline), read in blocks of ``read_size``."""

    def __init__(self, path, read_size: int):
        self.f = open(path, "rb", buffering=0)
        self.read_size = read_size
        self.lines: list[bytes] = []
        self.pos = 0
        self.tail = b""

    def _fill(self) -> None:
        block = self.f.read(self.read_size)
        if not block:
            raise RuntimeError(f"chunk file {self.f.name} ended early (was it changed?)")
        if self.tail:
            block = self.tail + block
        parts = block.split(b"\n")
        del block
        self.tail = parts.pop()
        self.lines, self.pos = parts, 0

    def take(self, k: int) -> list[bytes]:
        out = self.lines[self.pos : self.pos + k]
        self.pos += len(out)
        while len(out) < k:
            self._fill()
            more = self.lines[: k - len(out)]
            self.pos = len(more)
            out += more
        return out

    def close(self) -> None:
        self.lines = []
        self.f.close()


def _write_lines(f, lines, order, batch: int, progress: _Progress) -> int:
    """Write ``lines[order]``, each followed by a newline, in joined batches; return bytes."""
    written = 0
    for s in range(0, len(order), batch):
        idx = order[s : s + batch].tolist()
        picked = [lines[idx[0]]] if len(idx) == 1 else itemgetter(*idx)(lines)
        data = b"\n".join(picked)
        f.write(data)
        f.write(b"\n")
        written += len(data) + 1
        progress.update(len(data) + 1)
    return written


@dataclass(frozen=True)
class ShuffleReport:
    """What a run did: lines, bytes (the output adds a newline to unterminated last lines),
    chunks cut by pass 1, merge passes (1 unless the fan-in was too small), the fan-in."""

    lines: int
    bytes_in: int
    bytes_out: int
    chunks: int
    merge_passes: int
    fan_in: int
    memory: int
    merge: str
    seconds: float


@dataclass
class _Plan:
    memory: int
    io: int  # input block size, bytes

    @classmethod
    def for_memory(cls, memory: int) -> _Plan:
        return cls(memory, int(min(8 << 20, max(4096, memory // 64))))


def _split(inputs, workdir: Path, plan: _Plan, rng, max_chunk_lines, progress):
    """Pass 1: cut the inputs into shuffled chunk files; returns [(path, lines, bytes)], bytes_in."""
    chunks: list[tuple[Path, int, int]] = []
    lines: list[bytes] = []
    payload = 0  # bytes of the lines held (without newlines)
    budget = plan.memory - 2 * plan.io - 65536  # a write batch and slack stay free
    bytes_in = 0
    avg = 64.0  # running mean line length, for the cost of the next block
    seen_lines, seen_bytes = 0, 0

    def cost(n_lines: int, n_bytes: int) -> int:
        return n_bytes + LINE_OVERHEAD * n_lines

    def flush() -> None:
        nonlocal lines, payload
        if not lines:
            return
        path = workdir / f"chunk-{len(chunks):06d}"
        order = rng.permutation(len(lines))
        batch = max(1, int(plan.io // (avg + 1)))
        try:
            with _open_for_write(path, plan.io) as f:
                nbytes = _write_lines(f, lines, order, batch, _Progress(False))
        except OSError as e:
            raise _no_space(e, "temporary chunk files", workdir, bytes_in) from e
        chunks.append((path, len(lines), nbytes))
        lines, payload = [], 0

    for src in inputs:
        pieces: list[bytes] = []  # an unfinished line (it may span blocks)
        pieces_len = 0
        with open(src, "rb", buffering=0) as f:
            while True:
                # the next block costs itself plus its split lines: make room first
                nxt = plan.io + cost(int(plan.io / (avg + 1)) + 1, plan.io)
                if lines and cost(len(lines), payload) + pieces_len + nxt > budget:
                    flush()
                block = f.read(plan.io)
                if not block:
                    break
                bytes_in += len(block)
                progress.update(len(block))
                parts = block.split(b"\n")
                del block
                if pieces:
                    pieces.append(parts[0])
                    parts[0] = b"".join(pieces)
                    pieces, pieces_len = [], 0
                last = parts.pop()
                if last:
                    pieces.append(last)
                    pieces_len += len(last)
                    if cost(1, pieces_len) > budget:
                        raise ValueError(
                            f"memory: a line of more than {pieces_len} bytes in {src} does not "
                            f"fit the budget of {plan.memory} bytes; raise --memory"
                        )
                if not parts:
                    continue
                n_bytes = sum(map(len, parts))
                seen_lines += len(parts)
                seen_bytes += n_bytes
                avg = seen_bytes / seen_lines
                if cost(len(parts), n_bytes) > budget:
                    raise ValueError(
                        f"memory: lines of {src} do not fit the budget of {plan.memory} bytes; "
                        "raise --memory"
                    )
                if max_chunk_lines is not None:
                    while len(lines) + len(parts) > max_chunk_lines:
                        k = max_chunk_lines - len(lines)
                        lines.extend(parts[:k])
                        payload += sum(map(len, parts[:k]))
                        parts = parts[k:]
                        flush()
                lines.extend(parts)
                payload += sum(map(len, parts))
                del parts
        if pieces:  # a last line without a newline: it gets one
            if max_chunk_lines is not None and len(lines) >= max_chunk_lines:
                flush()
            line = b"".join(pieces)
            lines.append(line)
            payload += len(line)
    flush()
    return chunks, bytes_in


def _fan_in(memory: int, avg: float) -> int:
    """Chunks that one merge can read at once: memory (a read block of >= 4 KiB each) and
    the open-file limit (``ulimit -n``) less the descriptors already open."""
    per_reader = 2 * 4096 + LINE_OVERHEAD * int(4096 / (avg + 1) + 1)
    by_memory = max(2, (memory // 2) // per_reader)
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft == resource.RLIM_INFINITY:
            soft = 1 << 20
    except (ImportError, OSError, ValueError):  # pragma: no cover - not Linux
        soft = 256
    try:
        used = len(os.listdir("/proc/self/fd"))
    except OSError:  # pragma: no cover - not Linux
        used = 16
    by_files = soft - used - 8  # room for the output, the inputs' leftovers and Python itself
    return int(max(0, min(by_memory, by_files)))


def _merge(chunks, out_f, merge, rng, memory, avg, progress) -> int:
    """Merge chunk files ``[(path, lines, bytes)]`` into the open file ``out_f``; returns bytes."""
    k = len(chunks)
    line_cost = 2 * avg + LINE_OVERHEAD + 48  # payload in the reader and in the join, pointers
    block = int(max(1, min(_MAX_BLOCK, (memory // 2 - 65536) // line_cost)))
    read_size = int(max(4096, (memory // 2) // (k * (2 + LINE_OVERHEAD / (avg + 1)))))
    readers = []
    written = 0
    try:
        for path, _, _ in chunks:
            try:
                readers.append(_ChunkReader(path, read_size))
            except OSError as e:
                if e.errno not in (errno.EMFILE, errno.ENFILE):
                    raise
                raise OSError(
                    e.errno,
                    f"too many open files: could open {len(readers)} of {k} chunk files; "
                    "raise `ulimit -n`, or lower the fan-in (fan_in=) so that the exact merge "
                    "takes several passes",
                ) from e
        counts = [n for _, n, _ in chunks]
        for labels in _labels(merge, counts, rng, block):
            order = np.argsort(labels, kind="stable")
            comp = np.bincount(labels, minlength=k)
            concat: list[bytes] = []
            for c in np.flatnonzero(comp).tolist():
                concat += readers[c].take(int(comp[c]))
            inv = np.empty(len(labels), dtype=np.intp)
            inv[order] = np.arange(len(labels))
            written += _write_lines(out_f, concat, inv, len(labels), progress)
    finally:
        for r in readers:
            r.close()
    return written


def external_shuffle(
    inputs,
    output,
    *,
    memory: int | str = "1G",
    seed=None,
    merge: str = "exact",
    tmpdir=None,
    progress: bool | None = False,
    fan_in: int | None = None,
    max_chunk_lines: int | None = None,
) -> ShuffleReport:
    """Shuffle the lines of ``inputs`` (paths) into ``output`` using about ``memory`` bytes.

    ``memory``: bytes or text like ``"2G"`` (Python's own heap: chunks, buffers, indices).
    ``seed``: int for a reproducible run (the result depends on it and on the chunking, i.e. on
    ``memory``). ``merge``: ``"exact"`` (uniform over all permutations) or ``"round-robin"``
    (the post's merge). ``tmpdir``: where chunk files go (default: the output's directory; they
    need as much space as the input). ``progress``: a progress line on stderr (``None``: only if
    stderr is a terminal). ``fan_in``: at most this many chunk files open in one merge (default:
    from ``memory`` and ``ulimit -n``). ``max_chunk_lines``: also cap the lines per chunk.
    """
    t0 = time.perf_counter()
    merge = _check_merge(merge)
    mem = parse_memory(memory)
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    inputs = [Path(p) for p in inputs]
    if not inputs:
        raise ValueError("inputs: expected at least one file, got none")
    for p in inputs:
        if not p.exists():
            raise FileNotFoundError(f"inputs: no such file: {str(p)!r}")
        if p.is_dir():
            raise ValueError(f"inputs: expected a file, got the directory {str(p)!r}")
    output = Path(output)
    if output.is_dir():
        raise ValueError(f"output: expected a file name, got the directory {str(output)!r}")
    out_dir = output.parent if str(output.parent) else Path(".")
    if not out_dir.is_dir():
        raise FileNotFoundError(f"output: directory {str(out_dir)!r} does not exist")
    tmp_root = Path(tmpdir) if tmpdir is not None else out_dir
    if not tmp_root.is_dir():
        raise FileNotFoundError(f"tmpdir: directory {str(tmp_root)!r} does not exist")
    if fan_in is not None and (isinstance(fan_in, bool) or int(fan_in) < 2):
        raise ValueError(f"fan_in: expected an int >= 2, got {fan_in!r}")
    if max_chunk_lines is not None and int(max_chunk_lines) < 1:
        raise ValueError(f"max_chunk_lines: expected an int >= 1, got {max_chunk_lines!r}")
    if progress is None:
        progress = sys.stderr.isatty()
    bar = _Progress(bool(progress))
    rng = np.random.default_rng(seed)
    plan = _Plan.for_memory(mem)

    workdir = Path(tempfile.mkdtemp(prefix=".kexue-shuffle-", dir=tmp_root))
    fd, tmp_name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".partial", dir=out_dir)
    os.close(fd)
    tmp_out = Path(tmp_name)
    try:
        total_in = sum(p.stat().st_size for p in inputs if p.is_file())
        bar.start("split+shuffle", total_in)
        chunks, bytes_in = _split(inputs, workdir, plan, rng, max_chunk_lines, bar)
        n_lines = sum(n for _, n, _ in chunks)
        bytes_out = sum(b for _, _, b in chunks)
        avg = (bytes_out - n_lines) / max(n_lines, 1)
        limit = _fan_in(mem, avg) if fan_in is None else int(fan_in)
        passes, serial = 0, len(chunks)
        n_split = len(chunks)
        if len(chunks) > limit and limit < 2:
            raise OSError(
                errno.EMFILE,
                f"too many open files: {len(chunks)} chunks, but not even two can be open at "
                "once (the open-file limit `ulimit -n` is nearly used up); raise `ulimit -n`",
            )
        if len(chunks) > limit and merge == "round-robin":
            raise OSError(
                errno.EMFILE,
                f"too many chunk files to open at once: {len(chunks)} chunks, at most {limit} "
                "(limited by --memory and the open-file limit `ulimit -n`); the round-robin merge "
                "needs them all open: raise --memory or `ulimit -n`, or use --merge exact, "
                "which merges in several passes",
            )
        while len(chunks) > limit:  # bounded fan-in: merge groups into bigger (exact) chunks
            passes += 1
            bar.start(f"merge pass {passes}", bytes_out)
            merged = []
            for g in range(0, len(chunks), limit):
                group = chunks[g : g + limit]
                if len(group) == 1:
                    merged.append(group[0])
                    continue
                path = workdir / f"chunk-{serial:06d}"
                serial += 1
                try:
                    with _open_for_write(path, plan.io) as f:
                        nbytes = _merge(group, f, merge, rng, mem, avg, bar)
                except OSError as e:
                    raise _no_space(e, "temporary chunk files", workdir, bytes_out) from e
                for p, _, _ in group:
                    p.unlink()
                merged.append((path, sum(n for _, n, _ in group), nbytes))
            chunks = merged
        passes += 1
        bar.start("merge" if passes == 1 else f"merge pass {passes}", bytes_out)
        try:
            with _open_for_write(tmp_out, plan.io) as f:
                if len(chunks) == 1:  # one chunk: it is the shuffled output
                    with open(chunks[0][0], "rb") as src:
                        shutil.copyfileobj(src, f, plan.io)
                    written = chunks[0][2]
                elif chunks:
                    written = _merge(chunks, f, merge, rng, mem, avg, bar)
                else:
                    written = 0
        except OSError as e:
            raise _no_space(e, "the output", out_dir, bytes_out) from e
        bar.finish()
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_out, 0o666 & ~umask)
        _fsync(tmp_out)  # the data reach the disk before the name does
        os.replace(tmp_out, output)
        _fsync(out_dir)
        return ShuffleReport(
            lines=n_lines,
            bytes_in=bytes_in,
            bytes_out=written,
            chunks=n_split,
            merge_passes=passes,
            fan_in=limit,
            memory=mem,
            merge=merge,
            seconds=time.perf_counter() - t0,
        )
    finally:
        bar.finish()
        shutil.rmtree(workdir, ignore_errors=True)
        if tmp_out.exists():
            tmp_out.unlink()


def shuffle_in_memory(inputs, output, *, seed=None) -> int:
    """The baseline: read every line into memory, permute, write (same line convention)."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    lines: list[bytes] = []
    for p in inputs:
        with open(p, "rb") as f:
            data = f.read()
        parts = data.split(b"\n")
        del data
        if parts[-1] == b"":
            parts.pop()
        lines += parts
    order = np.random.default_rng(seed).permutation(len(lines))
    with open(output, "wb", buffering=1 << 20) as f:
        return _write_lines(f, lines, order, 1 << 14, _Progress(False))


_CHILD = r"""
import importlib.util, json, os, resource, sys, tempfile, time, tracemalloc
spec = importlib.util.spec_from_file_location("external_shuffle", sys.argv[1])
X = importlib.util.module_from_spec(spec)  # the module alone: no torch from the package
sys.modules["external_shuffle"] = X
spec.loader.exec_module(X)
method, src, dst, memory, seed, trace = sys.argv[2:8]


def run():
    if method == "python-in-memory":
        X.shuffle_in_memory([src], dst, seed=int(seed))
    else:
        X.external_shuffle([src], dst, memory=int(memory), seed=int(seed), merge=method)


with tempfile.TemporaryDirectory() as d:  # warm-up: lazy imports and first-call caches
    tiny = os.path.join(d, "tiny")
    with open(tiny, "wb") as f:
        f.write(b"a\nb\nc\n")
    X.external_shuffle([tiny], os.path.join(d, "o"), memory=int(memory), seed=0, merge="exact")
    X.shuffle_in_memory([tiny], os.path.join(d, "o"), seed=0)


def status(key):  # kB lines of /proc/self/status (Linux): VmRSS now, VmHWM its peak
    with open("/proc/self/status") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith(key + ":"))


try:
    with open("/proc/self/clear_refs", "w") as f:  # resets VmHWM to the current RSS
        f.write("5")
    before, peak_key = status("VmRSS"), "VmHWM"
except OSError:  # not Linux, or not allowed: the peak since start (an upper bound)
    before, peak_key = status("VmRSS") if os.path.exists("/proc/self/status") else 0, None
t0 = time.perf_counter()
run()
sec = time.perf_counter() - t0
if peak_key:
    after = status(peak_key)
else:
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
peak = None
if trace == "1":  # a second run under tracemalloc (which slows allocation down several times)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    run()
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
print(json.dumps(dict(seconds=sec, traced_peak=peak, rss_growth=(after - before) * 1024)))
"""

_SHUF_CHILD = r"""
import json, resource, subprocess, sys, time
t0 = time.perf_counter()
subprocess.run(sys.argv[1:], check=True)
sec = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # shuf's own peak
print(json.dumps(dict(seconds=sec, traced_peak=None, rss_growth=rss)))
"""


def measure_shuffle(
    method: str, src, dst, *, memory: int | str = "64M", seed: int = 0, trace: bool = False
) -> dict:
    """Time and memory of one shuffle of ``src`` in a fresh subprocess.

    ``method``: ``"shuf"`` (GNU coreutils), ``"python-in-memory"``,
    ``"exact"`` or ``"round-robin"``. Returns ``seconds`` (Python methods: the call alone, after
    the imports and a warm-up on a tiny file), ``mb_per_s`` (input MB per second),
    ``rss_growth`` (peak RSS during the call less the RSS before it, Linux ``VmHWM`` after a
    reset; shuf: its whole peak RSS) and, with
    ``trace=True``, ``traced_peak`` (tracemalloc peak of a second, untimed call; None for shuf).
    """
    import json
    import subprocess

    if method not in ("shuf", "python-in-memory", "exact", "round-robin"):
        raise ValueError(
            f"method: expected 'shuf', 'python-in-memory', 'exact' or 'round-robin', got {method!r}"
        )
    mem = parse_memory(memory)
    size = os.path.getsize(src)
    if method == "shuf":
        exe = shutil.which("shuf")
        if exe is None:
            raise FileNotFoundError("method: GNU shuf is not installed")
        cmd = [sys.executable, "-c", _SHUF_CHILD, exe, "-o", str(dst), str(src)]
    else:
        cmd = [sys.executable, "-c", _CHILD, __file__, method, str(src), str(dst), str(mem)]
        cmd += [str(seed), "1" if trace else "0"]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{method}: the measured run failed:\n{res.stderr[-2000:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["method"] = method
    out["mb_per_s"] = size / 1e6 / max(out["seconds"], 1e-9)
    return out


# ----------------------------------------------------------------------------- command line
class _Terminated(BaseException):
    """Raised by the SIGTERM handler so that every ``finally`` runs (temporary files go)."""


def _on_sigterm(signum, frame):  # pragma: no cover - exercised in a subprocess test
    raise _Terminated()


def _memory_arg(text: str) -> int:
    try:
        return parse_memory(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("memory: ")) from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m kexue_lib.external_shuffle",
        description="Shuffle the lines of files larger than memory (bytes in, bytes out). "
        "A last line without a newline gets one.",
    )
    p.add_argument("inputs", nargs="+", metavar="IN", help="input files (read as bytes)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output file")
    p.add_argument(
        "--memory", type=_memory_arg, default=parse_memory("1G"), help="budget, e.g. 2G (1G)"
    )
    p.add_argument("--seed", type=int, default=None, help="seed for a reproducible run")
    p.add_argument(
        "--merge",
        choices=("exact", "round-robin"),
        default="exact",
        help="exact: uniform over all permutations (default); round-robin: the post's merge",
    )
    p.add_argument("--tmpdir", default=None, help="directory for chunk files (default: OUT's)")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress line on stderr (default: when stderr is a terminal)",
    )
    return p


def main(argv=None) -> int:
    """The command line; returns the exit status (0 ok, 1 failure, 2 bad arguments, 130/143)."""
    parser = _parser()
    args = parser.parse_args(argv)
    for p in args.inputs:
        if not os.path.exists(p):
            parser.error(f"argument IN: no such file: {p!r}")
    prev = None
    try:
        prev = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # pragma: no cover - not the main thread
        pass
    try:
        rep = external_shuffle(
            args.inputs,
            args.output,
            memory=args.memory,
            seed=args.seed,
            merge=args.merge,
            tmpdir=args.tmpdir,
            progress=args.progress,
        )
    except _Terminated:
        print("external_shuffle: terminated; no output written", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("external_shuffle: interrupted; no output written", file=sys.stderr)
        return 130
    except (OSError, ValueError, RuntimeError) as e:
        print(f"external_shuffle: error: {e}", file=sys.stderr)
        return 1
    finally:
        if prev is not None:
            signal.signal(signal.SIGTERM, prev)
    if args.progress:
        print(
            f"{rep.lines} lines, {rep.chunks} chunks, {rep.merge_passes} merge pass(es)",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
