"""lumbar-d2: Detectron2 Mask R-CNN for lumbar intervertebral disc segmentation on MRI.

detectron2 itself is not on PyPI as a wheel; ``make install`` (tools/install_detectron2.py)
installs it first. It is therefore not listed in install_requires.
"""
from setuptools import find_packages, setup

setup(
    name="lumbar_d2",
    version="0.1.0",
    description="Detectron2-based lumbar intervertebral disc instance segmentation on MRI",
    # tools/*.py stay runnable as scripts (Detectron2 style) and are also installed as
    # lumbar_d2.tools, so that their entry points become console scripts (nnU-Net style)
    packages=find_packages(include=["lumbar_d2", "lumbar_d2.*"]) + ["lumbar_d2.tools"],
    package_dir={"lumbar_d2.tools": "tools"},
    python_requires=">=3.10",
    install_requires=["torch>=2.0", "torchvision>=0.15", "opencv-python-headless>=4.5",
                      "pycocotools>=2.0.6", "numpy>=1.23", "fvcore>=0.1.5", "scipy>=1.8",
                      "tqdm", "matplotlib", "tensorboard", "setuptools>=77,<81",
                      # volumes: SimpleITK reads/writes DICOM series, NIfTI, MetaImage;
                      # nibabel keeps a NIfTI input's header bit-exact in the label volume;
                      # pydicom groups a folder's DICOM files by series
                      "SimpleITK>=2.2", "nibabel>=3.2", "pydicom>=2.3"],
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
