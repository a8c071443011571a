"""Make this clone's `.venv`: a small venv layered on the cached one, whose `finetune` runs *this* clone's code.

Why: the venv with torch and friends (several GB) is cached outside the clone and shared by every clone on the
machine. An editable install into it points at whichever clone ran it last, so `.venv/bin/finetune` in one
clone used to run another clone's code. Instead, each clone gets its own tiny venv (no pip, seconds to make)
holding three things: a `.pth` that adds the cached venv's site-packages (with its own .pth files), a `.pth`
that puts this clone's package roots first, and the console scripts of pyproject.toml. Nothing is ever
installed into the shared venv.

    python scripts/clone_venv.py CACHED_VENV   # run from the clone's root (the Makefile's `venv` target does)
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAMP = "finetune-cached-venv.txt"


def site_packages(venv: Path) -> Path:
    """The site-packages folder of `venv`."""
    out = subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                         check=True, capture_output=True, text=True).stdout.strip()
    return Path(out)


def main(cached: str) -> int:
    cached_venv = Path(cached).resolve()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    roots = pyproject["tool"]["setuptools"]["packages"]["find"]["where"]
    venv = ROOT / ".venv"
    if venv.is_symlink() or (venv.exists() and not (venv / "pyvenv.cfg").exists()):
        venv.unlink() if venv.is_symlink() else shutil.rmtree(venv)
    stamp = venv / STAMP
    if not (stamp.exists() and stamp.read_text() == str(cached_venv)):
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([str(cached_venv / "bin" / "python"), "-m", "venv", "--without-pip", str(venv)], check=True)
    site = site_packages(venv)
    (site / "zz_finetune_cached_venv.pth").write_text(
        f"import site; site.addsitedir({str(site_packages(cached_venv))!r})\n")
    (site / "00_finetune_this_clone.pth").write_text("".join(f"{ROOT / r}\n" for r in roots))
    version = pyproject["project"]["version"]
    dist = site / f"finetune_operator-{version}.dist-info"
    dist.mkdir(exist_ok=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: finetune-operator\nVersion: {version}\n")
    scripts = pyproject["project"]["scripts"]
    (dist / "entry_points.txt").write_text("[console_scripts]\n" + "".join(f"{k} = {v}\n" for k, v in scripts.items()))
    (dist / "RECORD").write_text("")
    for name, target in scripts.items():
        module, func = target.split(":")
        script = venv / "bin" / name
        script.write_text(f"#!{venv / 'bin' / 'python'}\nimport sys\nfrom {module} import {func}\n"
                          f"sys.exit({func}())\n")
        script.chmod(0o755)
    stamp.write_text(str(cached_venv))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
