#!/usr/bin/env bash
# Build the HTML book: set up .venv (see tests/setup_env.sh), execute every chapter, write _build/html.
#   bash book/build.sh            build; chapters whose code and kexue_lib are unchanged are not re-run
#   bash book/build.sh --clean    execute everything from scratch
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
source tests/setup_env.sh

# The execution cache knows notebooks, not the library they import: a change in kexue_lib
# (or in the environment) invalidates it.
lib_hash="$( (find kexue_lib -name '*.py' -print0 | sort -z | xargs -0 cat; cat .venv/.kexue-stamp) | sha256sum | cut -c1-16)"
if [ "${1:-}" = "--clean" ] || [ "$(cat _build/.kexue_lib-hash 2>/dev/null)" != "$lib_hash" ]; then
  rm -rf _build
fi
mkdir -p _build && echo "$lib_hash" >_build/.kexue_lib-hash

start=$(date +%s)
# -W: warnings are errors (a chapter that fails to execute is one); -n: every reference must resolve.
jupyter-book build . -W -n --keep-going
echo "kexue: book built in $(( $(date +%s) - start )) s. Open $root/_build/html/index.html in a browser."
