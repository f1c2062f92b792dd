#!/usr/bin/env bash
# Create or update the virtual environment at $1 from requirements.lock.
# Idempotent: when the lock's digest matches the one recorded in the
# environment, nothing is installed. The repository is put on the
# environment's path with a .pth file (rewritten every time, so one
# environment can serve several clones, as CI's does).
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
  quiet "$venv/bin/python" -m pip install --quiet -r "$lock"
  echo "$digest" > "$stamp"
fi
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$root" > "$site/avgrounding.pth"
# The command line, `avlib ask VIDEO "question"`, without installing the package.
printf '#!/bin/sh\nexec "%s/bin/python" -m avlib "$@"\n' "$(cd "$venv" && pwd)" > "$venv/bin/avlib"
chmod +x "$venv/bin/avlib"
# papermill runs notebooks with the kernel named python3: make it this venv's.
"$venv/bin/python" -m ipykernel install --prefix "$venv" --name python3 >/dev/null
