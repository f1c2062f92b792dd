#!/usr/bin/env bash
# Create or update the virtual environment at $1 from requirements.lock.
# Idempotent: when the lock's digest matches the one recorded in the
# environment, nothing is installed. The environment names no clone: a
# start-up hook puts the clone that holds the current folder on the path, so
# one environment serves several clones (as CI's does) and `python`, `avlib`
# and the notebooks' kernel each run the code of the clone they start in.
set -euo pipefail
venv=${1:?usage: tools/venv.sh VENV}
root=$(cd "$(dirname "$0")/.." && pwd)
lock="$root/requirements.lock"
digest=$(sha256sum "$lock" | cut -d' ' -f1)
stamp="$venv/.avgrounding-lock"

if [ ! -x "$venv/bin/python" ]; then
  echo "creating virtual environment $venv"
  python3.11 -m venv "$venv" 2>/dev/null || python3 -m venv "$venv"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$digest" ]; then
  echo "installing requirements.lock into $venv (a few minutes the first time)"
  # This machine's pip config names local package folders that may lack a
  # package; pip warns once per package. Those lines are noise, the rest is not.
  quiet() { "$@" 2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2); }
  quiet "$venv/bin/python" -m pip install --quiet --upgrade pip==26.3
  # Two pips side by side, each on its own part of the lock: the CUDA build's binary wheels (torch,
  # triton, nvidia-*, cuda-*: gigabytes of shared libraries to unpack, little to compile) and the
  # other packages (bytecode to compile, which keeps a core busy). Each part takes about as long
  # alone, so on two cores both together take less time than one pip on the whole lock
  # (benchmarks/venv_install.py measures both ways).
  # The lock is the whole closure (`make lock`), so nothing is resolved: --no-deps, then
  # `pip check` confirms every requirement of every installed package is met.
  parts=$(mktemp -d)
  binary_wheels='^(torch|triton|nvidia-|cuda-)'
  grep -E "$binary_wheels" "$lock" > "$parts/binary.txt" || true
  grep -v -E "$binary_wheels" "$lock" | grep -v '^#' > "$parts/other.txt" || true
  quiet "$venv/bin/python" -m pip install --quiet --no-deps -r "$parts/binary.txt" & binary=$!
  quiet "$venv/bin/python" -m pip install --quiet --no-deps -r "$parts/other.txt" & other=$!
  failed=0
  wait "$binary" || failed=1
  wait "$other" || failed=1
  rm -rf "$parts"
  if [ "$failed" = 1 ]; then
    echo "installing requirements.lock failed (pip's message above); fix it and run this again" >&2
    exit 1
  fi
  if ! problems=$("$venv/bin/python" -m pip check); then
    echo "$problems" >&2
    echo "requirements.lock is not a whole set of packages (above: what is missing); regenerate it with make lock" >&2
    exit 1
  fi
  echo "$digest" > "$stamp"
fi
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
rm -f "$site/avgrounding.pth"  # an older version named one clone there
cp "$root/tools/avgrounding_clone.py" "$site/avgrounding_clone.py"
echo "import avgrounding_clone" > "$site/avgrounding_clone.pth"
# The command line, `avlib ask VIDEO "question"`, without installing the package.
python_bin="$(cd "$venv" && pwd -P)/bin/python"
{
  echo "#!$python_bin"
  echo "import sys"
  echo "import avgrounding_clone"
  echo "if avgrounding_clone.root is None:"
  echo "    sys.exit('avlib: run it inside a clone of avgrounding (no avlib/ and dvc.yaml in this folder or above it)')"
  echo "from avlib.cli import main"
  echo "sys.exit(main())"
} > "$venv/bin/avlib"
chmod +x "$venv/bin/avlib"
# papermill runs notebooks with the kernel named python3: make it this venv's.
"$venv/bin/python" -m ipykernel install --prefix "$venv" --name python3 >/dev/null
