"""One environment, several clones: each process runs the code of the clone it starts in."""

import base64
import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
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


# tools/venv.sh installs the lock as two parts at once. Here it installs a lock of small wheels built on the spot
# into a new environment, with pip told to read nothing but them (no config files, no index).

def wheel(folder: Path, name: str, requires: tuple[str, ...] = (), files: dict[str, str] | None = None) -> None:
    """A pure-Python wheel `name` 1.0 in `folder`; its module is `name` with dashes as underscores."""
    module = name.replace("-", "_")
    info = f"{module}-1.0.dist-info"
    content = {f"{module}/__init__.py": "", **(files or {}),
               f"{info}/METADATA": "Metadata-Version: 2.1\nName: {}\nVersion: 1.0\n{}".format(
                   name, "".join(f"Requires-Dist: {r}\n" for r in requires)),
               f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: avgrounding-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = []
    for path, text in content.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{info}/RECORD,,")
    with zipfile.ZipFile(folder / f"{module}-1.0-py3-none-any.whl", "w") as archive:
        for path, text in content.items():
            archive.writestr(path, text)
        archive.writestr(f"{info}/RECORD", "\n".join(record) + "\n")


# The last step of tools/venv.sh registers the kernel with `python -m ipykernel install`; this one writes its spec.
FAKE_IPYKERNEL = {"ipykernel/__main__.py": (
    "import json, pathlib, sys\n"
    "args = dict(zip(sys.argv[2::2], sys.argv[3::2]))\n"
    "spec = pathlib.Path(args['--prefix'], 'share', 'jupyter', 'kernels', args['--name'])\n"
    "spec.mkdir(parents=True)\n"
    "(spec / 'kernel.json').write_text(json.dumps({'argv': [sys.executable]}))\n")}


def install_lock(tmp_path: Path, lock: list[str]):
    """Run tools/venv.sh of a scratch clone holding `lock` into a new environment; (result, the environment)."""
    root, wheels, venv = tmp_path / "clone", tmp_path / "wheels", tmp_path / "venv"
    (root / "tools").mkdir(parents=True)
    wheels.mkdir()
    here = Path(__file__).resolve().parents[1] / "tools"
    for name in ("venv.sh", "avgrounding_clone.py"):
        shutil.copy(here / name, root / "tools" / name)
    (root / "requirements.lock").write_text("# a test lock\n" + "".join(f"{line}\n" for line in lock))
    wheel(wheels, "nvidia-fakelib")
    wheel(wheels, "needs-nvidia", requires=("nvidia-fakelib",))
    wheel(wheels, "needs-missing", requires=("not-in-the-lock",))
    wheel(wheels, "ipykernel", files=FAKE_IPYKERNEL)
    # A new environment with this one's pip (the version tools/venv.sh pins), so nothing needs fetching.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(subprocess.check_output([venv / "bin" / "python", "-c",
                                         "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip())
    ours = Path(sysconfig.get_paths()["purelib"])
    for entry in [ours / "pip", *ours.glob("pip-*.dist-info")]:
        shutil.copytree(entry, site / entry.name)
    env = {**os.environ, "PIP_CONFIG_FILE": "/dev/null", "PIP_NO_INDEX": "1",
           "PIP_FIND_LINKS": str(wheels), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    result = subprocess.run(["bash", root / "tools" / "venv.sh", venv], capture_output=True, text=True, env=env,
                            timeout=300)
    return result, venv


def installed(venv: Path) -> set[str]:
    listed = subprocess.check_output([venv / "bin" / "python", "-m", "pip", "list", "--format=freeze"], text=True)
    return {line.split("==")[0] for line in listed.split()}


def test_venv_installs_both_parts_of_the_lock(tmp_path):
    result, venv = install_lock(tmp_path, ["ipykernel==1.0", "needs-nvidia==1.0", "nvidia-fakelib==1.0"])
    assert result.returncode == 0, result.stderr
    assert {"ipykernel", "needs-nvidia", "nvidia-fakelib"} <= installed(venv)
    assert (venv / ".avgrounding-lock").is_file()
    assert (venv / "share" / "jupyter" / "kernels" / "python3" / "kernel.json").is_file()


def test_venv_refuses_a_lock_that_misses_a_requirement(tmp_path):
    result, venv = install_lock(tmp_path, ["ipykernel==1.0", "needs-missing==1.0"])
    assert result.returncode != 0
    assert "not-in-the-lock" in result.stderr and "make lock" in result.stderr
    assert not (venv / ".avgrounding-lock").exists()  # the next run installs again


def test_venv_fails_when_either_part_fails(tmp_path):
    for lock in (["ipykernel==1.0", "nvidia-absent==1.0"], ["ipykernel==1.0", "absent==1.0"]):
        result, venv = install_lock(tmp_path / lock[1], lock)
        assert result.returncode != 0
        assert "installing requirements.lock failed" in result.stderr and lock[1].split("==")[0] in result.stderr
        assert not (venv / ".avgrounding-lock").exists()
