# Sourced by scripts/test and scripts/lock: sets UV to the uv that scripts/tools.txt pins,
# installing it (hash-checked, from PyPI) into .tools when it is missing or another version.
# Needs PY (a Python >= 3.11) or finds one.
if [ -z "${PY:-}" ]; then
  for cand in python3.13 python3.12 python3.11 python3; do
    if command -v "$cand" >/dev/null 2>&1 \
        && "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      PY=$cand; break
    fi
  done
fi
[ -n "${PY:-}" ] || { echo "roost: Python >= 3.11 is required" >&2; exit 1; }
UV=$PWD/.tools/bin/uv
uv_want=$(sed -n 's/^uv==\([^ ]*\).*/\1/p' scripts/tools.txt)
if [ "$("$UV" --version 2>/dev/null | cut -d' ' -f2)" != "$uv_want" ]; then
  printf '\033[1m== %s\033[0m\n' "installing uv $uv_want into .tools"
  rm -rf .tools
  "$PY" -m venv .tools
  .tools/bin/python -m pip install -q --disable-pip-version-check --require-hashes \
    -r scripts/tools.txt
fi
# uv uses the Python found here, never one it would download.
export UV_PYTHON_DOWNLOADS=never
