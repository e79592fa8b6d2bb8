#!/usr/bin/env bash
# Run every test: lint, kexue_lib unit tests, every chapter under nbmake (each judged against a
# budget relative to this machine), the HTML build of those executed chapters with warnings as
# errors, headless-browser checks of the built pages, and a second execution of some chapters
# to check they print the same numbers. Does its own set-up (tests/setup_env.sh; Debian's
# chromium via apt-get when missing). Each chapter is executed once, plus the determinism re-run
# of the chapters tests/determinism.py picks (KEXUE_DETERMINISM=all re-runs every chapter).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
t_all=$(date +%s)
source tests/setup_env.sh
export KEXUE_SIZE=cpu PYTHONHASHSEED=0

declare -a steps=()
t_step=$t_all  # the set-up step counts from the very start
step() {
  local now
  now=$(date +%s)
  [ -n "${current:-}" ] && steps+=("$(printf '%5d s  %s' $((now - t_step)) "$current")")
  t_step=$now
  current="$*"
  [ -n "$current" ] && printf '\n=== %s\n' "$current"
  return 0
}
current="set-up (virtual environment)"

if ! command -v chromium >/dev/null 2>&1; then
  step "installing Debian's chromium (browser tests)"
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "kexue: chromium is missing and this is not root; run: sudo apt-get install chromium" >&2
    exit 1
  fi
fi

step "lint (ruff: kexue_lib, tests, chapters)"
ruff check .
ruff format --check .

step "kexue_lib unit tests and book structure (redraw budgets relative to this machine)"
python -m pytest -q tests -m "not built" -p no:cacheprovider

step "every chapter under nbmake (budget relative to this machine), then the HTML build, -W"
KEXUE_BUDGET=enforce bash book/build.sh --clean

step "second execution of the chapters tests/determinism.py picks"
rerun="$root/.kexue/rerun"
rm -rf "$rerun" && mkdir -p "$rerun"
python tests/determinism.py >"$rerun/chosen.txt"
mapfile -t again <"$rerun/chosen.txt"
for nb in "${again[@]}"; do
  mkdir -p "$rerun/$(dirname "$nb")" && cp "$nb" "$rerun/$nb"
done
if [ "${#again[@]}" -gt 0 ]; then
  python -m pytest -q -p no:cacheprovider --nbmake --overwrite --nbmake-timeout=300 \
    --rootdir "$root" "$rerun"
fi

step "built book: browser checks and the determinism comparison"
python -m pytest -q tests -m built -p no:cacheprovider --nb-executed-dir "$rerun"

step ""
echo
echo "kexue: time per step"
printf '%s\n' "${steps[@]}"
echo "kexue: all tests passed in $(( $(date +%s) - t_all )) s"
