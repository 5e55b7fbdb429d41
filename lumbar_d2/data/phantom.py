"""Deterministic synthetic axial lumbar MRI phantom in the Sudirman dataset layout.

Tests, the quick-start and CI need a data set that trains a Mask R-CNN in minutes without
shipping patient data. :func:`write_sudirman_phantom` writes T1/T2 slices and label images
exactly where the "Label Image Ground Truth Data for Lumbar Spine MRI Dataset" (Sudirman et
al.) keeps them, so the real converter reads phantom and real data the same way::

    <root>/05_Final_Ground_Truth_Data/Label_Images/L1_<pppp>_D<d>.png
    <root>/04_Intermediary_Ground_Truth_Data/T1_Output/T1_<pppp>_D<d>.png
    <root>/04_Intermediary_Ground_Truth_Data/T2_Output/T2_<pppp>_D<d>.png

Anatomy (anterior = top): a kidney-shaped disc with a darker annulus rim, the thecal sac
behind it, a bony ring (lamina, facets, spinous process) behind the sac, the AAP band between
disc and posterior elements, psoas and paraspinal muscles, vessels, abdominal content and a
subcutaneous fat ring. A tissue map is painted first and both the label image and the two
contrasts are looked up from it, so labels never overlap and T1/T2 stay co-registered.

Every patient draws its geometry, intensities, bias field and noise level from its own
generator ``default_rng([seed, patient])`` and every slice from ``default_rng([seed, patient,
level])``: a patient looks the same whatever ``n_patients`` is, and patients differ enough that
a split by patient matters.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Sequence, Tuple, Union

import cv2
import numpy as np

from ..utils.errors import LumbarError
from ..utils.io import write_png
from .layouts import SUDIRMAN_CLASSES, SUDIRMAN_IMAGES, SUDIRMAN_LABELS

PHANTOM_LABELS: Dict[str, int] = {name: label for label, name in SUDIRMAN_CLASSES.items()}
_REF = 320.0  # geometry below is given in pixels of a 320 px (22 cm) field of view
_SHIFT = 4  # sub-pixel bits for cv2 drawing: smooth outlines without anti-aliasing

# Tissue ids, in painting order (a later tissue covers an earlier one).
AIR, FAT, ABDOMEN, RETRO_FAT, VESSEL, MUSCLE, PERIDISC, AAP, CORTEX, MARROW, SAC, DISC = range(12)
# Per tissue: label, T1, T2, texture amplitude. T2: CSF and fat bright, muscle dark; T1: fat
# bright, CSF dark. DISC values are the annulus; the nucleus is set per slice.
_TISSUES = np.array([
    (0, 0.00, 0.00, 0.00),   # AIR
    (0, 0.88, 0.78, 0.05),   # FAT (subcutaneous)
    (0, 0.50, 0.45, 0.20),   # ABDOMEN (bowel, mixed)
    (0, 0.80, 0.70, 0.08),   # RETRO_FAT (retroperitoneal fat)
    (0, 0.06, 0.06, 0.05),   # VESSEL (flow void)
    (PHANTOM_LABELS["other"], 0.36, 0.20, 0.08),                # MUSCLE
    (0, 0.30, 0.18, 0.05),   # PERIDISC (ligament / prevertebral soft tissue)
    (PHANTOM_LABELS["aap"], 0.52, 0.30, 0.10),                  # AAP
    (PHANTOM_LABELS["posterior_element"], 0.16, 0.12, 0.04),    # CORTEX
    (PHANTOM_LABELS["posterior_element"], 0.60, 0.38, 0.06),    # MARROW
    (PHANTOM_LABELS["thecal_sac"], 0.14, 0.95, 0.03),           # SAC
    (PHANTOM_LABELS["disc"], 0.40, 0.56, 0.04),                 # DISC (annulus)
], dtype=np.float32)
_LABEL_LUT = _TISSUES[:, 0].astype(np.uint8)

Point = Tuple[float, float]


def _fixed(v: float) -> int:
    """Pixel coordinate -> cv2 fixed-point integer (``_SHIFT`` fractional bits)."""
    return int(round(v * (1 << _SHIFT)))


def _fill_ellipse(img: np.ndarray, center: Point, axes: Point, angle: float,
                  value: int) -> None:
    """Fill an ellipse given in (sub-)pixels; no anti-aliasing, so ``value`` stays a tissue id."""
    cv2.ellipse(img, (_fixed(center[0]), _fixed(center[1])), (_fixed(axes[0]), _fixed(axes[1])),
                angle, 0, 360, value, -1, cv2.LINE_8, _SHIFT)


@dataclass(frozen=True)
class PatientParams:
    """One patient's anatomy and scanner settings, in pixels of a 320 px field of view.

    Level-to-level variation is added on top of these in :func:`render_slice`.
    """

    disc_w: float
    disc_d: float
    disc_dx: float
    disc_y_frac: float
    angle: float
    concavity: float
    rim_w: float
    nucleus_t2: float
    sac_r: float
    sac_ratio: float
    pe_thick: float
    spinous_len: float
    muscle_axes: Point
    psoas_axes: Point
    fat_thick: float
    body_half_w: float
    tissue_jitter: np.ndarray  # (n_tissues, 2) multiplicative T1/T2 factors
    gain: Point
    noise: Point
    bias: np.ndarray  # (2, 5) low-order polynomial coefficients of log-bias, per contrast
    blur: float


def sample_patient(rng: np.random.Generator) -> PatientParams:
    """Draw one patient; every field is drawn in a fixed order so seeds stay reproducible."""
    u = rng.uniform
    return PatientParams(
        disc_w=u(90, 125), disc_d=u(55, 74), disc_dx=u(-25, 25), disc_y_frac=u(0.35, 0.50),
        angle=u(-9, 9), concavity=u(0.14, 0.26), rim_w=u(4, 8), nucleus_t2=u(0.78, 0.95),
        sac_r=u(12.5, 17.5), sac_ratio=u(0.75, 1.0), pe_thick=u(8, 11),
        spinous_len=u(28, 42), muscle_axes=(u(32, 42), u(24, 31)),
        psoas_axes=(u(14, 20), u(22, 30)), fat_thick=u(8, 20), body_half_w=u(0.5, 0.62) * _REF,
        tissue_jitter=u(0.9, 1.1, size=(len(_TISSUES), 2)).astype(np.float32),
        gain=(u(0.8, 1.1), u(0.8, 1.1)), noise=(u(0.04, 0.08), u(0.04, 0.08)),
        bias=rng.normal(0.0, 0.12, size=(2, 5)), blur=u(0.6, 0.9))


class _Frame:
    """Spine-local frame: origin at the disc centre, u = patient's right-left, v = posterior.

    All spinal structures are placed in this frame, so the whole spine rotates together.
    """

    def __init__(self, center: Point, angle_deg: float, scale: float) -> None:
        self.center, self.angle, self.scale = center, angle_deg, scale
        t = np.deg2rad(angle_deg)
        self._rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])

    def to_image(self, uv: Sequence[Point]) -> np.ndarray:
        """Local points (reference px) -> image pixel coordinates, shape (n, 2)."""
        return np.asarray(uv, dtype=np.float64) * self.scale @ self._rot.T + self.center

    def pts(self, uv: Sequence[Point]) -> np.ndarray:
        """Local points -> fixed-point image coordinates for cv2 polygons and lines."""
        return np.round(self.to_image(uv) * (1 << _SHIFT)).astype(np.int32)

    def ellipse(self, img: np.ndarray, c: Point, axes: Point, tissue: int,
                angle: float = 0.0) -> None:
        """Fill an ellipse given in local coordinates (angle relative to the spine)."""
        xy = self.to_image([c])[0]
        _fill_ellipse(img, (xy[0], xy[1]), (axes[0] * self.scale, axes[1] * self.scale),
                      self.angle + angle, tissue)

    def polygon(self, img: np.ndarray, uv: Sequence[Point], tissue: int) -> None:
        """Fill a polygon given in local coordinates."""
        cv2.fillPoly(img, [self.pts(uv)], tissue, cv2.LINE_8, _SHIFT)

    def polyline(self, img: np.ndarray, uv: Sequence[Point], tissue: int, thick: float) -> None:
        """Draw a thick open polyline (bone) given in local coordinates."""
        cv2.polylines(img, [self.pts(uv)], False, tissue, max(1, int(round(thick * self.scale))),
                      cv2.LINE_8, _SHIFT)


@dataclass(frozen=True)
class _Spine:
    """Per-slice spine geometry in the local frame (reference px)."""

    a: float  # disc half width
    b: float  # disc half depth
    indent: float  # depth of the posterior concavity
    sac_c: float  # sac centre v
    sac_axes: Point
    thick: float  # posterior-element bone thickness
    spinous_len: float
    muscle_axes: Point
    psoas_axes: Point

    @property
    def arc_axes(self) -> Point:
        """Semi-axes of the lamina arc around the sac (sac + epidural gap + half the bone)."""
        gap = 4.0 + self.thick / 2
        return self.sac_axes[0] + gap + 8.0, self.sac_axes[1] + gap

    def lamina(self) -> List[Point]:
        """Facet -> lamina -> spinous base -> lamina -> facet, a V-shaped ring behind the sac."""
        ru, rv = self.arc_axes
        pts = [(ru * np.cos(t), self.sac_c + rv * np.sin(t))
               for t in np.deg2rad([-25, 5, 40, 65, 115, 140, 175, 205])]
        return pts[:4] + [(0.0, self.spinous_base)] + pts[4:]

    def aap_outline(self) -> List[Point]:
        """Posterior disc edge -> lateral to the facets (foramina) -> along the lamina."""
        ru, rv = self.arc_axes
        side = [(0.9 * self.a, 0.3 * self.b), (ru + 1.3 * self.thick, self.sac_c - 0.1 * rv)]
        back = self.lamina()[2:-2]
        return side + back + [(-u, v) for u, v in reversed(side)]

    @property
    def spinous_base(self) -> float:
        """v of the lamina's V tip, where the spinous process starts."""
        return self.sac_c + self.arc_axes[1] + 0.6 * self.thick


def _slice_spine(rng: np.random.Generator, prm: PatientParams, level: int) -> _Spine:
    """Level-dependent geometry: lower discs are wider, deeper and less concave."""
    k = float(np.clip(level - 3, -2, 2))
    a = prm.disc_w / 2 * (1 + 0.05 * k) + rng.uniform(-1.5, 1.5)
    b = prm.disc_d / 2 * (1 + 0.06 * k) + rng.uniform(-1.0, 1.0)
    indent = 2 * b * max(0.05, prm.concavity - 0.03 * k + rng.uniform(-0.02, 0.02))
    sac_axes = (prm.sac_r * (1 + 0.04 * k), prm.sac_r * prm.sac_ratio)
    sac_c = b - indent + 5.0 + sac_axes[1]
    scale = 1 + 0.08 * k
    return _Spine(a=a, b=b, indent=indent, sac_c=sac_c, sac_axes=sac_axes, thick=prm.pe_thick,
                  spinous_len=prm.spinous_len + rng.uniform(-3, 3),
                  muscle_axes=(prm.muscle_axes[0] * scale, prm.muscle_axes[1] * scale),
                  psoas_axes=(prm.psoas_axes[0] * (1 + 0.15 * k), prm.psoas_axes[1] * scale))


def _paint_body(tissue: np.ndarray, prm: PatientParams, frame: _Frame, bottom: float) -> None:
    """Body outline with a subcutaneous fat ring; the abdomen runs off the top of the field."""
    s, top = frame.scale, -0.25 * _REF * frame.scale
    cy, half_h = (top + bottom) / 2, (bottom - top) / 2
    cx, half_w = frame.center[0] - prm.disc_dx * s * 0.5, prm.body_half_w * s
    for t, shrink in ((FAT, 0.0), (ABDOMEN, prm.fat_thick * s)):
        _fill_ellipse(tissue, (cx, cy), (half_w - shrink, half_h - shrink), 0.0, t)


def _paint_soft_tissue(tissue: np.ndarray, f: _Frame, sp: _Spine) -> None:
    """Retroperitoneal fat, vessels, psoas and paraspinal muscles around the spine."""
    f.ellipse(tissue, (0, -0.1 * sp.b), (sp.a + 40, sp.b + 30), RETRO_FAT)
    f.ellipse(tissue, (0.3 * sp.a, -sp.b - 16), (10, 10), VESSEL)       # aorta (patient left)
    f.ellipse(tissue, (-0.4 * sp.a, -sp.b - 14), (13, 8), VESSEL, 10)  # IVC
    pa, pb = sp.psoas_axes
    mu, mv = sp.muscle_axes
    mc = sp.spinous_base + 0.3 * mv
    for side in (-1, 1):
        f.ellipse(tissue, (side * (sp.a + 0.6 * pa), 0.0), (pa, pb), MUSCLE, side * 35)
        f.ellipse(tissue, (side * (0.5 * sp.thick + mu + 1), mc), (mu, mv), MUSCLE, side * 15)


def _disc_mask(f: _Frame, sp: _Spine, size: int) -> np.ndarray:
    """Kidney shape: ellipse minus a posterior bite whose depth keeps the disc in one piece."""
    m = np.zeros((size, size), np.uint8)
    f.ellipse(m, (0, 0), (sp.a, sp.b), 1)
    bite_v = 0.55 * sp.b
    f.ellipse(m, (0, sp.b + bite_v - sp.indent), (0.42 * sp.a, bite_v), 0)
    return m.astype(bool)


def _paint_spine(tissue: np.ndarray, f: _Frame, sp: _Spine) -> np.ndarray:
    """Peri-disc tissue, AAP, posterior elements, sac, then the disc; returns the disc mask."""
    f.ellipse(tissue, (0, -1.0), (sp.a + 6, sp.b + 5), PERIDISC)
    lamina = sp.lamina()
    f.polygon(tissue, sp.aap_outline(), AAP)
    spinous = [(0, sp.spinous_base), (0, sp.spinous_base + sp.spinous_len)]
    for t, thick in ((CORTEX, sp.thick), (MARROW, sp.thick - 4)):
        f.polyline(tissue, lamina, t, thick)
        f.polyline(tissue, spinous, t, thick * 0.8)
    f.ellipse(tissue, (0, sp.sac_c), sp.sac_axes, SAC)
    disc = _disc_mask(f, sp, tissue.shape[0])
    tissue[disc] = DISC
    return disc


def _smooth_field(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Unit-variance random field with features ~size/cells px (tissue texture)."""
    field = cv2.resize(rng.standard_normal((cells, cells)).astype(np.float32), (size, size),
                       interpolation=cv2.INTER_CUBIC)
    return field / max(float(field.std()), 1e-6)


def _bias_field(coef: np.ndarray, size: int) -> np.ndarray:
    """Smooth multiplicative coil-sensitivity field: exp of a quadratic in x, y in [-1, 1]."""
    c = coef.astype(np.float32)
    x = np.linspace(-1, 1, size, dtype=np.float32)[None, :]
    y = x.T
    return np.exp(c[0] * x + c[2] * x * x + y * (c[1] + c[3] * y + c[4] * x))


def _contrast(rng: np.random.Generator, tissue: np.ndarray, nucleus: np.ndarray,
              texture: np.ndarray, prm: PatientParams, ch: int) -> np.ndarray:
    """Look up one contrast (ch 0 = T1, 1 = T2) and add partial volume, bias, gain, noise."""
    values = _TISSUES[:, 1 + ch] * prm.tissue_jitter[:, ch]
    img = values[tissue]
    disc_centre = (0.44, prm.nucleus_t2)[ch]
    img += nucleus * (disc_centre - values[DISC])
    img *= 1 + _TISSUES[:, 3][tissue] * texture
    img = cv2.GaussianBlur(img, (0, 0), prm.blur)
    img *= _bias_field(prm.bias[ch], tissue.shape[0]) * prm.gain[ch]
    sigma = prm.noise[ch]
    real = img + sigma * rng.standard_normal(img.shape, dtype=np.float32)
    imag = sigma * rng.standard_normal(img.shape, dtype=np.float32)
    mag = np.sqrt(real * real + imag * imag)  # Rician magnitude noise
    return np.clip(mag * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _nucleus_profile(disc: np.ndarray, rim_w: float) -> np.ndarray:
    """0 on the annulus rim, rising smoothly to 1 in the nucleus (distance from the edge)."""
    dist = cv2.distanceTransform(disc.astype(np.uint8), cv2.DIST_L2, 3)
    t = np.clip((dist - 0.5 * rim_w) / rim_w, 0.0, 1.0)
    return (t * t * (3 - 2 * t)).astype(np.float32)


def render_slice(rng: np.random.Generator, size: int, patient_params: PatientParams,
                 level: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render one axial slice through disc ``level`` (3 = L3/L4, 4 = L4/L5, 5 = L5/S1).

    Args:
        rng: slice generator (per-slice jitter, texture, noise).
        size: output height and width in pixels; geometry scales with it.
        patient_params: from :func:`sample_patient`.
        level: disc level; lower levels give larger, less concave discs and bigger muscles.

    Returns:
        ``(t1, t2, label)``, each a uint8 ``size x size`` array.
    """
    prm, s = patient_params, size / _REF
    sp = _slice_spine(rng, prm, level)
    center = (size / 2 + (prm.disc_dx + rng.uniform(-3, 3)) * s,
              (prm.disc_y_frac * _REF + rng.uniform(-4, 4)) * s)
    frame = _Frame(center, prm.angle + rng.uniform(-3, 3), s)
    spine_bottom = max(sp.spinous_base + sp.spinous_len,
                       sp.spinous_base + 1.3 * sp.muscle_axes[1])
    bottom = min(center[1] + (spine_bottom + prm.fat_thick + 6) * s, size - 1.5)
    tissue = np.zeros((size, size), np.uint8)
    _paint_body(tissue, prm, frame, bottom)
    _paint_soft_tissue(tissue, frame, sp)
    disc = _paint_spine(tissue, frame, sp)
    nucleus = _nucleus_profile(disc, prm.rim_w * s)
    texture = _smooth_field(rng, size, 24)
    t1, t2 = (_contrast(rng, tissue, nucleus, texture, prm, ch) for ch in (0, 1))
    return t1, t2, _LABEL_LUT[tissue]


def sudirman_paths(root: Union[str, Path], patient: int, level: int) -> Dict[str, Path]:
    """The three files of one slice: ``{"T1": ..., "T2": ..., "label": ...}``."""
    root, stem = Path(root), f"{patient:04d}_D{level}"
    paths = {mod: root / SUDIRMAN_IMAGES.format(seq=mod) / f"{mod}_{stem}.png"
             for mod in ("T1", "T2")}
    paths["label"] = root / SUDIRMAN_LABELS / f"L1_{stem}.png"
    return paths


def _check_args(n_patients: int, levels: Iterable[int], seed: int, size: int) -> List[int]:
    """Refuse arguments that would give unreadable file names or clipped anatomy."""
    levels = [int(lv) for lv in levels]
    if seed < 0:
        raise LumbarError(f"seed={seed}: must be >= 0")
    if not 1 <= n_patients <= 9999:
        raise LumbarError(f"n_patients={n_patients}: must be 1..9999 (4-digit patient ids)")
    if not levels or any(not 1 <= lv <= 9 for lv in levels):
        raise LumbarError(f"levels={levels}: give one or more disc levels in 1..9, e.g. 3 4 5")
    if size < 64:
        raise LumbarError(f"size={size}: too small for the phantom anatomy; use >= 64")
    return levels


def write_sudirman_phantom(root: Union[str, Path], n_patients: int = 12,
                           levels: Sequence[int] = (3, 4, 5), seed: int = 0,
                           size: int = 320) -> Path:
    """Write a phantom data set in the Sudirman layout and return ``root``.

    Re-running with the same arguments rewrites identical bytes (files are replaced, not
    appended); files of patients or levels outside the arguments are left alone.

    Args:
        root: data set folder (created if missing).
        n_patients: patients ``0001..n_patients``.
        levels: disc levels, one slice each (Sudirman uses D3, D4, D5).
        seed: base seed; patient ``p`` uses ``default_rng([seed, p])``.
        size: slice height and width in pixels (320 matches the real data).
    """
    root = Path(root)
    levels = _check_args(n_patients, levels, seed, size)
    for patient in range(1, n_patients + 1):
        prm = sample_patient(np.random.default_rng([seed, patient]))
        for level in levels:
            t1, t2, label = render_slice(np.random.default_rng([seed, patient, level]), size,
                                         prm, level)
            paths = sudirman_paths(root, patient, level)
            for key, arr in (("T1", t1), ("T2", t2), ("label", label)):
                write_png(paths[key], arr)
    return root
