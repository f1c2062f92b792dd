"""Put the avgrounding clone that holds the current folder on sys.path.

tools/venv.sh copies this module into the environment and imports it from a
.pth file, so it runs whenever Python starts. It walks up from the current
folder to the first one holding avlib/__init__.py and dvc.yaml: the environment
names no clone, and each process runs the code of the clone it was started in.
"""

import os
import sys


def find_root(start: str) -> str | None:
    """The nearest folder at or above `start` that is an avgrounding clone, or None."""
    path = os.path.abspath(start)
    while True:
        if os.path.isfile(os.path.join(path, "avlib", "__init__.py")) and os.path.isfile(os.path.join(path, "dvc.yaml")):
            return path
        parent = os.path.dirname(path)
        if parent == path:
            return None
        path = parent


try:
    root = find_root(os.getcwd())
except OSError:  # the current folder was deleted
    root = None
if root is not None and root not in sys.path:
    sys.path.append(root)
