"""Progress bars a run can switch off from outside.

tqdm reads TQDM_DISABLE only for calls that do not pass `disable` themselves,
and every bar here has a caller's switch. `progress_bar` honours both: a bar
shows when the caller wants it and the environment does not forbid it
(tools/run_notebook.sh sets TQDM_DISABLE=1, so executed notebooks carry no
bars, only the lines the notebooks print).
"""

from __future__ import annotations

import os

from tqdm import tqdm  # text bars: a notebook without ipywidgets warns about tqdm.auto


def bars_off() -> bool:
    """Whether TQDM_DISABLE is set to a true value."""
    return os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false", "no")


def progress_bar(iterable=None, show: bool = True, **kwargs) -> tqdm:
    """tqdm(iterable, **kwargs), shown only if `show` and bars are not switched off."""
    return tqdm(iterable, disable=not show or bars_off(), **kwargs)
