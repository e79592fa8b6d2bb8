#!/usr/bin/env bash
# Refresh requirements.lock, the exact versions that tests/setup_env.sh installs and CI tests:
#   bash tests/relock.sh
# Resolves requirements.txt and kexue_lib[test] afresh (newest versions allowed by their bounds)
# in a throw-away environment, then writes every installed version. Review the diff, run the
# test command, and commit the lock with the change that needed it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
KEXUE_VENV="$tmp/venv" KEXUE_UNLOCKED=1 bash -c "source '$root/tests/setup_env.sh'"
{
  echo "# Exact versions installed by tests/setup_env.sh (pip -c). Refresh: bash tests/relock.sh"
  echo "# torch is pinned without its local tag (+cpu), so the same line serves the CUDA build."
  "$tmp/venv/bin/python" -m pip freeze --exclude-editable | sed -E 's/^(torch==[^+]+)\+.*/\1/' | sort -f
} >"$root/requirements.lock"
echo "kexue: wrote $root/requirements.lock ($(grep -c '==' "$root/requirements.lock") pins)"
