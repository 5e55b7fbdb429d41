#!/usr/bin/env python
"""Make ``import detectron2`` work in this Python, without a C++/CUDA compiler.

1. If detectron2 is already importable (an official build with compiled ops, or a previous
   run of this script), keep it and do nothing.
2. Otherwise download PyPI's ``pb1-detectron2==0.6`` source distribution (its Python sources
   equal upstream detectron2 v0.6, but it has no C++/CUDA sources, so ``pip install`` of it
   fails), verify its sha256 from the index, and pip-install its pure-Python ``detectron2``
   package under the distribution name ``detectron2``. The missing compiled ops are covered
   at import time by :mod:`lumbar_d2.compat`.
3. The same sdist holds Detectron2's ``projects/``: its ``PointRend/point_rend`` package is
   installed the same way (distribution ``detectron2-pointrend``), unchanged, for the
   PointRend mask head (``configs/*pointrend*``).

Only the standard library and pip are used, so this runs before anything else is installed.
Usage: python tools/install_detectron2.py
"""
import hashlib
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

SDIST = "pb1-detectron2-0.6.tar.gz"
INDEX = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
# detectron2 v0.6's runtime requirements that a Mask R-CNN workflow imports.
REQUIRES = ["Pillow>=7.1", "matplotlib", "pycocotools>=2.0.2", "termcolor>=1.1", "yacs>=0.1.8",
            "tabulate", "cloudpickle", "tqdm>4.29.0", "tensorboard", "fvcore>=0.1.5",
            "iopath>=0.1.7", "omegaconf>=2.1", "hydra-core>=1.1", "scipy"]
SETUP_PY = """from setuptools import find_packages, setup
setup(name="detectron2", version="0.6", description="detectron2 v0.6 (pure Python, from {sdist})",
      packages=find_packages(include=["detectron2", "detectron2.*"]),
      package_data={{"detectron2.model_zoo": ["configs/**/*.yaml", "configs/**/*.py"]}},
      install_requires={requires!r}, python_requires=">=3.7")
"""


POINTREND_SETUP_PY = """from setuptools import setup
setup(name="detectron2-pointrend", version="0.6",
      description="Detectron2 v0.6 projects/PointRend (from {sdist})",
      packages=["point_rend"], python_requires=">=3.7")
"""


def importable(module: str = "detectron2") -> bool:
    """Installed in this Python (found, not imported: point_rend needs lumbar_d2.compat first)."""
    code = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
    return subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def sdist_url() -> tuple:
    """Find the sdist link and its sha256 on a PEP 503 simple index."""
    with urllib.request.urlopen(f"{INDEX}/pb1-detectron2/", timeout=60) as r:
        html = r.read().decode()
    m = re.search(r'href="([^"]*' + re.escape(SDIST) + r'[^"]*)"', html)
    if not m:
        sys.exit(f"error: {SDIST} not listed on {INDEX}; set PIP_INDEX_URL to a PyPI mirror")
    url = urllib.parse.urljoin(f"{INDEX}/pb1-detectron2/", m.group(1).replace("&amp;", "&"))
    digest = re.search(r"#sha256=([0-9a-f]{64})", url)
    return url.split("#")[0], digest.group(1) if digest else None


def _install(src: Path, setup_py: str) -> None:
    """pip-install the package folder(s) under ``src`` with our own ``setup.py``."""
    (src / "setup.py").write_text(setup_py)
    for extra in ("pyproject.toml", "setup.cfg"):
        (src / extra).unlink(missing_ok=True)
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q",
                           "--no-build-isolation", str(src)])


def main() -> int:
    missing = [m for m in ("detectron2", "point_rend") if not importable(m)]
    if not missing:
        out = subprocess.run(
            [sys.executable, "-c", "import detectron2; print(detectron2.__file__)"],
            capture_output=True, text=True).stdout.strip()
        print(f"detectron2 and point_rend already importable ({out}); keeping them")
        return 0
    url, sha = sdist_url()
    with tempfile.TemporaryDirectory() as tmp:
        tarball = Path(tmp) / SDIST
        print(f"downloading {url}")
        urllib.request.urlretrieve(url, tarball)
        if sha and hashlib.sha256(tarball.read_bytes()).hexdigest() != sha:
            sys.exit(f"error: sha256 mismatch for {SDIST}; retry the download")
        with tarfile.open(tarball) as tf:
            if hasattr(tarfile, "data_filter"):
                tf.extractall(tmp, filter="data")
            else:
                tf.extractall(tmp)
        root = next(Path(tmp).glob("pb1-detectron2-*"))
        if "detectron2" in missing:
            _install(root, SETUP_PY.format(sdist=SDIST, requires=REQUIRES))
            print("installed pure-Python detectron2 0.6; compiled ops are replaced by "
                  "lumbar_d2.compat")
        if "point_rend" in missing:
            _install(root / "projects" / "PointRend", POINTREND_SETUP_PY.format(sdist=SDIST))
            print("installed Detectron2's PointRend project (point_rend) from the same sdist")
    return 0


if __name__ == "__main__":
    import urllib.parse  # noqa: F401  (used by sdist_url)

    sys.exit(main())
