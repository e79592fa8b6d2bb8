"""Throughput and memory of the external shuffle against GNU shuf and an in-memory Python shuffle.

    python benchmarks/shuffle_bench.py                # 16 MB file, memory cap 1/8 of it
    python benchmarks/shuffle_bench.py --mb 2000 --memory 256M --dir /big/disk

Every method shuffles the same generated file in a fresh process (kexue_lib.external_shuffle.
measure_shuffle): MB/s of input, the ratio to GNU shuf, the growth of the peak RSS during the run
and, for the Python methods, the tracemalloc peak of a second run. Outputs are checked to hold the
same multiset of lines as the input. The page cache is warm (the file was just written), so this
measures CPU cost; on a large corpus on disk the run is bound by the disk (4 sequential passes of
the data for the external shuffle, 2 for shuf).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from kexue_lib.external_shuffle import measure_shuffle, parse_memory  # noqa: E402

METHODS = ("shuf", "python-in-memory", "exact", "round-robin")


def make_corpus(path: Path, megabytes: float, seed: int = 0) -> int:
    """Lines 'id<TAB>payload' with payloads of 10-120 random bytes (some not UTF-8)."""
    rng = np.random.default_rng(seed)
    target, written, i = int(megabytes * 1e6), 0, 0
    alphabet = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz \t\xe9\xff", dtype=np.uint8)
    with open(path, "wb") as f:
        while written < target:
            lens = rng.integers(10, 121, 20_000)
            body = rng.choice(alphabet, int(lens.sum())).tobytes()
            ends = np.cumsum(lens).tolist()
            starts = [0, *ends[:-1]]
            block = b"".join(
                b"%d\t%s\n" % (i + j, body[s:e]) for j, (s, e) in enumerate(zip(starts, ends))
            )
            f.write(block)
            written += len(block)
            i += len(lens)
    return written


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--mb", type=float, default=16.0, help="size of the generated file (MB)")
    p.add_argument("--memory", default=None, help="cap for the external shuffle (default: 1/8)")
    p.add_argument("--repeats", type=int, default=3, help="best of this many timed runs")
    p.add_argument("--dir", default=None, help="where the files go (default: a temp dir)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        src, out = Path(d) / "corpus.txt", Path(d) / "out.txt"
        size = make_corpus(src, args.mb)
        memory = parse_memory(args.memory or max(1 << 20, size // 8))
        want = sorted(src.read_bytes().split(b"\n"))
        rows = []
        for method in METHODS:
            runs = [
                measure_shuffle(method, src, out, memory=memory, seed=r, trace=r == 0)
                for r in range(args.repeats)
            ]
            best = max(runs, key=lambda r: r["mb_per_s"])
            best["traced_peak"] = runs[0]["traced_peak"]
            best["rss_growth"] = max(r["rss_growth"] for r in runs)
            assert sorted(out.read_bytes().split(b"\n")) == want, method
            rows.append(best)
    shuf = rows[0]["mb_per_s"]
    print(f"file {size / 1e6:.1f} MB, external-shuffle memory cap {memory / 2**20:.1f} MiB")
    print(f"{'method':<18}{'MB/s':>8}{'vs shuf':>9}{'peak RSS growth':>17}{'traced peak':>13}")
    for r in rows:
        traced = "-" if r["traced_peak"] is None else f"{r['traced_peak'] / 2**20:.1f} MiB"
        print(
            f"{r['method']:<18}{r['mb_per_s']:8.1f}{r['mb_per_s'] / shuf:9.2f}"
            f"{r['rss_growth'] / 2**20:13.1f} MiB{traced:>13}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
