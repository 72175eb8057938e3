"""What `pip install` builds: the portal's templates and static files are declared package data,
so the build installs them without setuptools' warnings about undeclared packages."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_carries_the_portal_files_and_the_build_warns_about_no_package(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "pex", source / "pex", ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(source)],
        capture_output=True, text=True, check=False,
    )
    assert built.returncode == 0, built.stderr
    output = built.stdout + built.stderr
    assert "absent from the `packages` configuration" not in output, output
    assert "BuildBackendWarning" not in output, output
    [wheel] = (tmp_path / "dist").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for data in ("pex/http/openapi.yaml", "pex/http/templates/base.html", "pex/http/static/portal.css"):
        assert data in names
    assert not any("__pycache__" in name for name in names)
