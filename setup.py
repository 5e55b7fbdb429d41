"""lumbar-d2: Detectron2 Mask R-CNN for lumbar intervertebral disc segmentation on MRI.

detectron2 itself is not on PyPI as a wheel; ``make install`` (tools/install_detectron2.py)
installs it first. It is therefore not listed in install_requires.

The model zoo ships inside the package, the Detectron2 way: ``configs/`` and ``models/`` stay
once at the top of the repository and are linked into ``lumbar_d2/model_zoo/`` at build time
(a copy where links are not possible), so a wheel carries every config and shipped weight
file as package data (``lumbar_d2.model_zoo.get_config_file``).
"""
import os
import shutil
from pathlib import Path
from typing import List

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent
ZOO = HERE / "lumbar_d2" / "model_zoo"


def model_zoo_files() -> List[str]:
    """Link configs/ and models/ into the zoo package; their files, relative to it."""
    for name in ("configs", "models"):
        source, link = HERE / name, ZOO / name
        if not source.is_dir():  # building from an sdist: the copies are already there
            continue
        if link.is_symlink():
            link.unlink()
        elif link.is_dir():
            shutil.rmtree(link)
        try:
            os.symlink(os.path.join("..", "..", name), link, target_is_directory=True)
        except OSError:  # no symlinks (e.g. Windows without developer mode)
            shutil.copytree(source, link)
    files = list(ZOO.glob("configs/**/*.yaml")) + list(ZOO.glob("models/*.pth"))
    return sorted(str(f.relative_to(ZOO)) for f in files)


setup(
    name="lumbar_d2",
    version="0.1.0",
    description="Detectron2-based lumbar intervertebral disc instance segmentation on MRI",
    # tools/*.py stay runnable as scripts (Detectron2 style) and are also installed as
    # lumbar_d2.tools, so that their entry points become console scripts (nnU-Net style)
    packages=find_packages(include=["lumbar_d2", "lumbar_d2.*"]) + ["lumbar_d2.tools"],
    package_dir={"lumbar_d2.tools": "tools"},
    package_data={"lumbar_d2.model_zoo": model_zoo_files()},
    python_requires=">=3.10",
    install_requires=["torch>=2.0", "torchvision>=0.15", "opencv-python-headless>=4.5",
                      "pycocotools>=2.0.6", "numpy>=1.23", "fvcore>=0.1.5", "scipy>=1.8",
                      "tqdm", "matplotlib", "tensorboard", "setuptools>=77,<81",
                      # volumes: SimpleITK reads/writes DICOM series, NIfTI, MetaImage;
                      # nibabel keeps a NIfTI input's header bit-exact in the label volume;
                      # pydicom groups a folder's DICOM files by series
                      "SimpleITK>=2.2", "nibabel>=3.2", "pydicom>=2.3",
                      # DICOM SEG output for DICOM series (back to the PACS)
                      "highdicom>=0.22"],
    extras_require={"dicom": ["pydicom>=2.3"], "export": ["onnx"],
                    "dev": ["pytest>=7", "pydicom>=2.3", "hypothesis>=6", "ruff>=0.4",
                            "onnx", "onnxruntime"]},
    entry_points={"console_scripts": [
        "lumbar-doctor=lumbar_d2.doctor:main",
        "lumbar-convert=lumbar_d2.tools.convert_dataset:main",
        "lumbar-train=lumbar_d2.tools.train_net:entry",
        "lumbar-evaluate=lumbar_d2.tools.evaluate:main",
        "lumbar-predict=lumbar_d2.tools.predict:main",
        "lumbar-export=lumbar_d2.tools.export_model:main",
        "lumbar-collect-results=lumbar_d2.tools.collect_results:main",
    ]},
)
