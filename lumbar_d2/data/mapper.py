"""Dataset mapper for grey MRI slices, with augmentations that respect anatomy.

Differences from Detectron2's ``DatasetMapper``:

* images are read with their bit depth (8/16-bit) and normalised by
  :func:`lumbar_d2.data.imageio.to_model_input` (the same call as at inference);
* training augmentations: small rotation (``INPUT.AUG.ROTATION``), scale jitter through
  ``INPUT.MIN_SIZE_TRAIN``, contrast / brightness / gamma jitter (intensity only, no colour
  ops: the channels are the same grey slice), and a left-right flip only when
  ``INPUT.AUG.HFLIP`` (valid for axial slices; a sagittal flip would swap anterior/posterior).
  Vertical flips are never used: cranial-caudal order is anatomy. Optional bias field
  (``INPUT.AUG.BIAS_FIELD``) and Gaussian noise (``INPUT.AUG.NOISE``) mimic other scanners;
  ``INPUT.AUG.DARKEN_INSTANCES`` darkens some annotated instances, as degenerated discs lose
  their T2 signal (dark discs are the ones a model trained on bright ones misses).
* ``INPUT.SLICE_CONTEXT`` (2.5D): the neighbouring slices k-1 / k+1 fill the first / last
  channel (:func:`lumbar_d2.data.imageio.with_context`), a sample given as a lone slice with
  probability ``INPUT.AUG.DROP_CONTEXT``.
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

from .imageio import read_array, to_model_input, with_context
from .instances import decode_segmentations


class RandomGamma(T.Augmentation):
    """Gamma on intensities scaled to [0, 1]: img' = 255 * (img / 255) ** gamma."""

    def __init__(self, gamma_range=(0.7, 1.4)):
        super().__init__()
        self._init(locals())

    def get_transform(self, image):
        gamma = float(np.random.uniform(*self.gamma_range))
        return T.ColorTransform(lambda img: _gamma(img, gamma))


def _gamma(img: np.ndarray, gamma: float) -> np.ndarray:
    return _like(255.0 * np.power(np.clip(img.astype(np.float32) / 255.0, 0, 1), gamma), img)


class RandomNoise(T.Augmentation):
    """Additive Gaussian noise with a std drawn per slice from [0, max_std] x 255."""

    def __init__(self, max_std: float):
        super().__init__()
        self._init(locals())

    def get_transform(self, image):
        std = float(np.random.uniform(0, self.max_std)) * 255.0
        seed = int(np.random.randint(2**31))
        return T.ColorTransform(lambda img: _add_noise(img, std, seed))


def _add_noise(img: np.ndarray, std: float, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0.0, std, img.shape[:2]).astype(np.float32)
    out = img.astype(np.float32) + (noise[..., None] if img.ndim == 3 else noise)
    return _like(out, img)


class RandomBiasField(T.Augmentation):
    """Smooth multiplicative shading, gain in [1 - strength, 1 + strength] over the slice.

    A random quadratic in normalised (x, y), as MRI receive-coil inhomogeneity is smooth.
    """

    def __init__(self, strength: float):
        super().__init__()
        self._init(locals())

    def get_transform(self, image):
        coef = np.random.uniform(-1, 1, 5)
        return T.ColorTransform(lambda img: _bias_field(img, coef, self.strength))


def _bias_field(img: np.ndarray, coef: np.ndarray, strength: float) -> np.ndarray:
    h, w = img.shape[:2]
    y, x = np.meshgrid(np.linspace(-1, 1, h, dtype=np.float32),
                       np.linspace(-1, 1, w, dtype=np.float32), indexing="ij")
    field = coef[0] * x + coef[1] * y + coef[2] * x * y + coef[3] * x * x + coef[4] * y * y
    field = 1.0 + strength * field / max(float(np.abs(field).max()), 1e-6)
    out = img.astype(np.float32) * (field[..., None] if img.ndim == 3 else field)
    return _like(out, img)


def _like(out: np.ndarray, img: np.ndarray) -> np.ndarray:
    """Back to the input's dtype: clipped, rounded uint8 for uint8 input."""
    return np.clip(out, 0, 255).round().astype(np.uint8) if img.dtype == np.uint8 else out


def darken_instances(image: np.ndarray, annotations: List[dict], prob: float,
                     gain_range, rng: np.random.Generator) -> np.ndarray:
    """Scale the pixels of each annotated instance, with probability ``prob``, by a gain drawn
    from ``gain_range``: a T2 disc that lost its water signal, its shape kept."""
    chosen = [a["segmentation"] for a in annotations
              if a.get("segmentation") and rng.random() < prob]
    if not chosen:
        return image
    out = image.astype(np.float32)
    for mask in decode_segmentations(chosen, *image.shape[:2]):
        out[mask] *= float(rng.uniform(*gain_range))
    return _like(out, image)


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
    if aug.BIAS_FIELD > 0:
        augs.append(RandomBiasField(aug.BIAS_FIELD))
    augs += [T.RandomContrast(*aug.CONTRAST), T.RandomBrightness(*aug.BRIGHTNESS),
             RandomGamma(tuple(aug.GAMMA))]
    if aug.NOISE > 0:
        augs.append(RandomNoise(aug.NOISE))
    return augs


class LumbarDatasetMapper(DatasetMapper):
    """``DatasetMapper`` that reads MRI slices through lumbar-d2's normalisation."""

    @configurable
    def __init__(self, is_train: bool = True, *, normalize: bool = True,
                 darken_prob: float = 0.0, darken_gain=(0.3, 0.8), slice_context: bool = False,
                 drop_context: float = 0.0, **kwargs):
        super().__init__(is_train, **kwargs)
        self.normalize = normalize
        self.slice_context, self.drop_context = slice_context, drop_context
        self.darken_prob = darken_prob
        self.darken_gain = tuple(darken_gain)

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        ret = super().from_config(cfg, is_train)
        ret.update(augmentations=build_augmentations(cfg, is_train), normalize=cfg.INPUT.NORMALIZE,
                   recompute_boxes=cfg.MODEL.MASK_ON and is_train,
                   darken_prob=cfg.INPUT.AUG.DARKEN_INSTANCES if is_train else 0.0,
                   darken_gain=cfg.INPUT.AUG.DARKEN_GAIN, slice_context=cfg.INPUT.SLICE_CONTEXT,
                   drop_context=cfg.INPUT.AUG.DROP_CONTEXT if is_train else 0.0)
        return ret

    def read_image(self, d: dict) -> np.ndarray:
        """The model input of a dataset dict: the slice, with its neighbours when 2.5D.

        Neighbours come from ``context_files`` (registered from the converter's
        ``--slice-regex``); they go through the same augmentations as the slice, since all
        three are channels of one image.
        """
        raw = read_array(d["file_name"])
        if not self.slice_context:
            return to_model_input(raw, normalize=self.normalize)
        files = d.get("context_files") or [None, None]
        if self.drop_context > 0 and np.random.random() < self.drop_context:
            files = [None, None]
        prev, nxt = (read_array(f) if f else None for f in files)
        return with_context(raw, prev, nxt, normalize=self.normalize)

    def __call__(self, dataset_dict: dict) -> dict:
        d = copy.deepcopy(dataset_dict)
        image = self.read_image(d)
        if self.darken_prob > 0 and d.get("annotations"):
            rng = np.random.default_rng(int(np.random.randint(2**31)))
            image = darken_instances(image, d["annotations"], self.darken_prob,
                                     self.darken_gain, rng)
        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        d["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if not self.is_train:
            d.pop("annotations", None)
        elif "annotations" in d:
            self._transform_annotations(d, transforms, image.shape[:2])
        return d
