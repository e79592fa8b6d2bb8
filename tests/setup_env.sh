#!/usr/bin/env bash
# Set up (or reuse) the project's virtual environment in .venv and activate it.
# Sourced by book/build.sh and tests/run.sh; safe to run again (a stamp skips work already done).
#   KEXUE_VENV=path   use another environment folder
#   KEXUE_TORCH=cpu|cuda   force the torch build (default: cuda when nvidia-smi answers, else cpu)
#   KEXUE_UNLOCKED=1       ignore requirements.lock (tests/relock.sh uses it to refresh the pins)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${KEXUE_VENV:-$root/.venv}"
extras="${KEXUE_EXTRAS:-test}"

python3 - <<'PY' || { echo "kexue: Python >= 3.10 is needed" >&2; exit 1; }
import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)
PY

[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
# shellcheck disable=SC1091
source "$venv/bin/activate"

stamp="$venv/.kexue-stamp"
lock=()
[ -n "${KEXUE_UNLOCKED:-}" ] || lock=(-c "$root/requirements.lock")
want="$(cat "$root/requirements.txt" "$root/pyproject.toml" "$root/requirements.lock" | sha256sum | cut -c1-16)-$extras-${KEXUE_UNLOCKED:-locked}"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  torch_kind="${KEXUE_TORCH:-}"
  if [ -z "$torch_kind" ]; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then torch_kind=cuda; else torch_kind=cpu; fi
  fi
  torch_pin="$(grep -E '^torch==' "$root/requirements.txt")"
  if ! python -c "import torch" 2>/dev/null; then
    if [ "$torch_kind" = cuda ]; then
      pip install -q "$torch_pin"
    else
      # A CPU build: first from a local wheel store, if pip is configured with one (find-links),
      # else from PyTorch's CPU index. Never the multi-GB CUDA wheels on a CPU machine.
      # (--no-deps: its small pure-Python needs come from the index with the rest below)
      pip install -q --no-index --no-deps "$torch_pin" 2>/dev/null \
        || pip install -q "$torch_pin" --index-url https://download.pytorch.org/whl/cpu
    fi
  fi
  # exact versions from requirements.lock: what CI tested is what a fresh clone gets
  pip install -q "${lock[@]}" -r "$root/requirements.txt" -e "$root[$extras]"
  echo "$want" >"$stamp"
fi
python -c "import torch, kexue_lib; print(f'kexue: torch {torch.__version__}, device {kexue_lib.default_device()}')"
