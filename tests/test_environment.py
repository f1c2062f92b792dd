"""One environment, several clones: each process runs the code of the clone it starts in."""

import subprocess
import sys
from pathlib import Path

BIN = Path(sys.prefix) / "bin"


def fake_clone(folder: Path, name: str) -> Path:
    """The least of a clone that the start-up hook looks for, with a CLI that says which clone it is."""
    (folder / "avlib").mkdir(parents=True)
    (folder / "notebooks").mkdir()
    (folder / "dvc.yaml").write_text("stages: {}\n")
    (folder / "avlib" / "__init__.py").write_text("")
    (folder / "avlib" / "cli.py").write_text(f"def main():\n    print('clone {name}')\n    return 0\n")
    return folder


def run(command, cwd):
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=60)


def test_the_environment_names_no_clone():
    site = Path(subprocess.check_output([BIN / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                        text=True).strip())
    assert (site / "avgrounding_clone.pth").is_file(), "run tools/venv.sh on this environment"
    assert not (site / "avgrounding.pth").exists()
    shebang, *code = (BIN / "avlib").read_text().splitlines()
    assert str(Path(__file__).resolve().parents[1]) not in "\n".join(code)


def test_two_clones_share_one_environment(tmp_path):
    a, b = fake_clone(tmp_path / "a", "a"), fake_clone(tmp_path / "b", "b")
    for clone in (a, b, a):  # in turn: the last one started must not win
        for where in (clone, clone / "notebooks"):  # the root, and a notebook kernel's folder
            found = run([BIN / "python", "-c", "import avlib; print(avlib.__file__)"], where)
            assert found.stdout.strip() == str(clone / "avlib" / "__init__.py"), found.stderr
            assert run([BIN / "avlib"], where).stdout.strip() == f"clone {clone.name}"


def test_avlib_outside_a_clone_says_so(tmp_path):
    result = run([BIN / "avlib", "--help"], tmp_path)
    assert result.returncode != 0 and "run it inside a clone of avgrounding" in result.stderr
