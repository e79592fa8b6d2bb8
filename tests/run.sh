#!/usr/bin/env bash
# Run every test: lint, kexue_lib unit tests, every chapter under nbmake (20 s budget each),
# the HTML build with warnings as errors, and headless-browser checks of the built pages.
# Does its own set-up (tests/setup_env.sh; Debian's chromium via apt-get when missing).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
source tests/setup_env.sh
export KEXUE_SIZE=cpu PYTHONHASHSEED=0

step() { printf '\n=== %s\n' "$*"; }

if ! command -v chromium >/dev/null 2>&1; then
  step "installing Debian's chromium (browser tests)"
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "kexue: chromium is missing and this is not root; run: sudo apt-get install chromium" >&2
    exit 1
  fi
fi

t0=$(date +%s)
step "lint (ruff)"
ruff check .
ruff format --check .

step "kexue_lib unit tests and book structure"
python -m pytest -q tests -m "not built" -p no:cacheprovider

step "every chapter under nbmake (one kernel each, 20 s wall budget)"
nbdir="$(mktemp -d)/book"
cp -r book "$nbdir"
python -m pytest -q -p tests.nb_budget -p no:cacheprovider --nbmake --overwrite "$nbdir" \
  --rootdir "$root"

step "HTML build from clean, warnings as errors"
bash book/build.sh --clean

step "built book: browser checks and re-execution determinism"
python -m pytest -q tests -m built -p no:cacheprovider --nb-executed-dir "$nbdir"
echo "kexue: all tests passed in $(( $(date +%s) - t0 )) s"
