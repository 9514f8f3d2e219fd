"""environment.yml (conda) and pyproject.toml (pip) describe the same packages and pins."""

import re
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parent.parent


def _norm(req: str) -> tuple[str, str]:
    name, spec = re.match(r"^([A-Za-z0-9_.\-]+)\s*(.*)$", req.strip()).groups()
    return name.lower().replace("_", "-"), spec.replace(" ", "")


def test_environment_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip_reqs = project["dependencies"] + project["optional-dependencies"]["dev"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert sorted(map(_norm, pip_section)) == sorted(map(_norm, pip_reqs))


def test_torch_is_pinned_exactly():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    torch = [r for r in project["dependencies"] if r.startswith("torch")]
    assert torch == ["torch==2.13.0"], "an open torch range pulls a multi-GB CUDA build"


def test_packaging_is_quiet_and_ships_the_templates(tmp_path):
    """Building the package prints no setuptools warnings (the license table, template folders
    left out of packages) and the wheel holds nanolib's templates."""
    import shutil
    import subprocess
    import sys
    import zipfile

    src = tmp_path / "src"  # a copy: setuptools leaves build/ and *.egg-info where it builds
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "nanolib", src / "nanolib", ignore=shutil.ignore_patterns("__pycache__"))
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation",
         "--no-cache-dir", "-w", str(tmp_path / "wheel"), str(src)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    log = done.stdout + done.stderr
    noisy = [
        ln
        for ln in log.splitlines()
        if re.search(r"Deprecat|would be ignored|not listed|license", ln, re.IGNORECASE)
    ]
    assert not noisy, "\n".join(noisy[:10])
    (wheel,) = (tmp_path / "wheel").glob("nanolib-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("nanolib/templates/") for n in names)
