#!/usr/bin/env bash
# Build the HTML book: set up .venv (tests/setup_env.sh), execute the chapters, render _build/html.
#   bash book/build.sh            chapters whose notebook, kexue_lib and environment are unchanged
#                                 since their last execution are not re-run
#   bash book/build.sh --clean    execute every chapter from scratch
# Each chapter is executed once, by pytest --nbmake with the budget plugin (tests/nb_budget.py);
# Jupyter Book then renders those executed notebooks without running them again (book/stage.py).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
source tests/setup_env.sh

start=$(date +%s)
clean=()
[ "${1:-}" = "--clean" ] && clean=(--clean)
python book/stage.py execute "${clean[@]}"
python book/stage.py stage
rm -rf _build/html _build/.doctrees _build/jupyter_execute
# -W: warnings are errors; -n: every reference must resolve.
jupyter-book build .kexue/stage --path-output . -W -n --keep-going
echo "kexue: book built in $(( $(date +%s) - start )) s. Open $root/_build/html/index.html in a browser."
