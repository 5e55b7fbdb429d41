"""lumbar-d2: Detectron2 Mask R-CNN for lumbar intervertebral disc segmentation on MRI.

detectron2 itself is not on PyPI as a wheel; ``make install`` (tools/install_detectron2.py)
installs it first. It is therefore not listed in install_requires.
"""
from setuptools import find_packages, setup

setup(
    name="lumbar_d2",
    version="0.1.0",
    description="Detectron2-based lumbar intervertebral disc instance segmentation on MRI",
    packages=find_packages(include=["lumbar_d2", "lumbar_d2.*"]),
    python_requires=">=3.10",
    install_requires=["torch>=2.0", "torchvision>=0.15", "opencv-python-headless>=4.5",
                      "pycocotools>=2.0.6", "numpy>=1.23", "fvcore>=0.1.5", "scipy>=1.8",
                      "tqdm", "matplotlib", "tensorboard", "setuptools>=77,<81",
                      # volumes: SimpleITK reads/writes DICOM series, NIfTI, MetaImage;
                      # nibabel keeps a NIfTI input's header bit-exact in the label volume;
                      # pydicom groups a folder's DICOM files by series
                      "SimpleITK>=2.2", "nibabel>=3.2", "pydicom>=2.3"],
    extras_require={"dicom": ["pydicom>=2.3"], "export": ["onnx"],
                    "dev": ["pytest>=7", "pydicom>=2.3", "hypothesis>=6"]},
    entry_points={"console_scripts": ["lumbar-doctor=lumbar_d2.doctor:main"]},
)
