#!/usr/bin/env bash
# Execute a stage notebook with papermill and render it to HTML.
#   tools/run_notebook.sh NOTEBOOK OUTPUT_NAME [papermill -p NAME VALUE ...]
# The executed copy and its HTML go to reports/notebooks/. A failing cell makes
# papermill exit non-zero (so DVC stops), and the executed copy shows that cell.
set -euo pipefail
notebook=$1
name=$2
shift 2
out=reports/notebooks
mkdir -p "$out"
# What a reader of the executed notebook should not wade through: progress bars (hundreds of lines a
# cell); one deprecation warning that peft triggers inside transformers, not ours to fix (the same one
# pyproject.toml filters for the tests); and tqdm's note, on importing tqdm.auto (huggingface_hub does),
# that ipywidgets is not installed. Every other warning still shows.
export TQDM_DISABLE=1
export PYTHONWARNINGS="ignore:\`is_gradient_checkpointing\` is deprecated:FutureWarning,ignore:IProgress not found"
status=0
python -m papermill "notebooks/$notebook.ipynb" "$out/$name.ipynb" -k python3 --cwd . --log-output --no-progress-bar "$@" || status=$?
python -m nbconvert --to html --log-level WARN "$out/$name.ipynb" --output "$name" --output-dir "$out" || true
exit $status
