"""Dataset mapper for grey MRI slices, with augmentations that respect anatomy.

Differences from Detectron2's ``DatasetMapper``:

* images are read with their bit depth (8/16-bit) and normalised by
  :func:`lumbar_d2.data.imageio.to_model_input` (the same call as at inference);
* training augmentations: small rotation (``INPUT.AUG.ROTATION``), scale jitter through
  ``INPUT.MIN_SIZE_TRAIN``, contrast / brightness / gamma jitter (intensity only, no colour
  ops: the channels are the same grey slice), and a left-right flip only when
  ``INPUT.AUG.HFLIP`` (valid for axial slices; a sagittal flip would swap anterior/posterior).
  Vertical flips are never used: cranial-caudal order is anatomy.
* ``INPUT.CROP`` crops *after* the resize: training on native-resolution crops keeps thin
  sagittal discs sharp at a fraction of the full-slice cost; testing uses the full slice.
* boxes are recomputed from the transformed masks, since rotation loosens boxes.
"""
from __future__ import annotations

import copy
from typing import List

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import DatasetMapper
from detectron2.data import transforms as T

from .imageio import read_array, to_model_input


class RandomGamma(T.Augmentation):
    """Gamma on intensities scaled to [0, 1]: img' = 255 * (img / 255) ** gamma."""

    def __init__(self, gamma_range=(0.7, 1.4)):
        super().__init__()
        self._init(locals())

    def get_transform(self, image):
        gamma = float(np.random.uniform(*self.gamma_range))
        return T.ColorTransform(lambda img: _gamma(img, gamma))


def _gamma(img: np.ndarray, gamma: float) -> np.ndarray:
    out = 255.0 * np.power(np.clip(img.astype(np.float32) / 255.0, 0, 1), gamma)
    return out.round().astype(np.uint8) if img.dtype == np.uint8 else out


def build_augmentations(cfg, is_train: bool) -> List[T.Augmentation]:
    """Resize (+ rotation, flip and intensity jitter when training), from the config."""
    if not is_train:
        return [T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, "choice")]
    aug = cfg.INPUT.AUG
    augs: List[T.Augmentation] = []
    if aug.ROTATION > 0:
        augs.append(T.RandomRotation([-aug.ROTATION, aug.ROTATION], expand=False))
    augs.append(T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN,
                                     cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING))
    if cfg.INPUT.CROP.ENABLED:  # after the resize, so CROP.SIZE is in network pixels
        augs.append(T.RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE))
    if aug.HFLIP:
        augs.append(T.RandomFlip(horizontal=True, vertical=False))
    augs += [T.RandomContrast(*aug.CONTRAST), T.RandomBrightness(*aug.BRIGHTNESS),
             RandomGamma(tuple(aug.GAMMA))]
    return augs


class LumbarDatasetMapper(DatasetMapper):
    """``DatasetMapper`` that reads MRI slices through lumbar-d2's normalisation."""

    @configurable
    def __init__(self, is_train: bool = True, *, normalize: bool = True, **kwargs):
        super().__init__(is_train, **kwargs)
        self.normalize = normalize

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        ret = super().from_config(cfg, is_train)
        ret.update(augmentations=build_augmentations(cfg, is_train), normalize=cfg.INPUT.NORMALIZE,
                   recompute_boxes=cfg.MODEL.MASK_ON and is_train)
        return ret

    def __call__(self, dataset_dict: dict) -> dict:
        d = copy.deepcopy(dataset_dict)
        image = to_model_input(read_array(d["file_name"]), normalize=self.normalize)
        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        d["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if not self.is_train:
            d.pop("annotations", None)
        elif "annotations" in d:
            self._transform_annotations(d, transforms, image.shape[:2])
        return d
