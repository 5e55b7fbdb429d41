"""Project config keys, added on top of Detectron2's defaults (PointRend-style)."""
from detectron2.config import CfgNode as CN


def add_lumbar_config(cfg: CN) -> None:
    """Add lumbar-d2's keys to ``cfg`` (only adds; never changes Detectron2's defaults)."""
    cfg.LUMBAR = CN()
    # Folder with converted datasets (<root>/<name>/annotations/<split>.json); "" = env var
    # LUMBAR_D2_DATASETS, else ./datasets.
    cfg.LUMBAR.DATASETS_ROOT = ""
    # >0: train this many passes over DATASETS.TRAIN; SOLVER.MAX_ITER, STEPS and CHECKPOINT_PERIOD
    # are then derived from the dataset size (iters = ceil(epochs * images / IMS_PER_BATCH)).
    cfg.LUMBAR.EPOCHS = 0.0
    # LR decay points as fractions of the schedule, used only when EPOCHS > 0.
    cfg.LUMBAR.STEP_FRACTIONS = (0.75, 0.92)
    # Validation dataset for the in-training Dice/loss hook; "" disables the hook.
    cfg.LUMBAR.VAL_DATASET = ""
    # Run validation every N iterations (0 = only at the end).
    cfg.LUMBAR.VAL_PERIOD = 0
    # Stop when validation Dice has not improved for this many validations (0 = never stop).
    cfg.LUMBAR.EARLY_STOP_PATIENCE = 0
    # Score threshold above which predicted instances count for Dice, P/R and HD95.
    cfg.LUMBAR.SCORE_THRESH = 0.5
    # Mask IoU needed for a predicted instance to match a ground-truth instance.
    cfg.LUMBAR.MATCH_IOU = 0.5
    # Allow train and test datasets to share patients (leaks; only to reproduce image splits).
    cfg.LUMBAR.ALLOW_PATIENT_OVERLAP = False
    # Bootstrap resamples (over patients) for the 95 % confidence intervals; 0 = none.
    cfg.LUMBAR.BOOTSTRAP = 1000
    # >0: train for this many minutes of wall-clock time instead of SOLVER.MAX_ITER (which then
    # only caps the run); the LR drops by SOLVER.GAMMA at LUMBAR.STEP_FRACTIONS of the budget.
    # Gives every variant of a CPU study the same budget whatever its speed per iteration.
    cfg.LUMBAR.TIME_BUDGET_MIN = 0.0
    # Trained weights shipped in the repository for this config (path relative to the repo
    # root) and their sha256: used by inference when MODEL.WEIGHTS is empty (model_zoo.py).
    cfg.LUMBAR.SHIPPED_WEIGHTS = ""
    cfg.LUMBAR.SHIPPED_SHA256 = ""
    # Inference on CPU keeps the model in channels-last (NHWC) memory: oneDNN's convolutions
    # and max-pooling then skip their layout reorders (same outputs; the shipped model went
    # from 0.34-0.38 to 0.27-0.33 s per 512x640 slice at 2 threads). False = NCHW, PyTorch's
    # default. Training stays NCHW: channels-last made its iterations slower (1.14-1.29 vs
    # 1.02-1.04 s at 2 threads, GroupNorm backward).
    cfg.LUMBAR.CHANNELS_LAST = True

    cfg.INPUT.AUG = CN()
    # Random rotation range in degrees (sagittal spines tilt; axial slices rotate in-plane).
    cfg.INPUT.AUG.ROTATION = 10.0
    # Multiplicative contrast and brightness jitter ranges (applied to the grey slice).
    cfg.INPUT.AUG.CONTRAST = (0.8, 1.2)
    cfg.INPUT.AUG.BRIGHTNESS = (0.85, 1.15)
    # Gamma range, applied on intensities scaled to [0, 1] (mimics T2 weighting changes).
    cfg.INPUT.AUG.GAMMA = (0.7, 1.4)
    # Left-right flip: valid for axial slices (near-symmetric), not for sagittal ones, where
    # it would swap anterior and posterior.
    cfg.INPUT.AUG.HFLIP = False
    # Gaussian noise, std drawn from [0, NOISE] x 255 per slice (bright, noisy scanners); 0 = off.
    cfg.INPUT.AUG.NOISE = 0.0
    # Smooth multiplicative bias field (coil shading): gain in [1 - B, 1 + B] across the slice
    # from a random low-order polynomial; 0 = off.
    cfg.INPUT.AUG.BIAS_FIELD = 0.0
    # Probability per annotated instance of scaling its pixels by a gain from DARKEN_GAIN:
    # degenerated discs lose their T2 signal and look dark; 0 = off.
    cfg.INPUT.AUG.DARKEN_INSTANCES = 0.0
    cfg.INPUT.AUG.DARKEN_GAIN = (0.3, 0.8)
    # 2.5D input: slices k-1 and k+1 of the same series in the first and last input channel
    # (the centre slice stands in for a missing one). Datasets need the converter's
    # --slice-regex; inference takes neighbours from volumes, series and slice folders.
    cfg.INPUT.SLICE_CONTEXT = False
    # With SLICE_CONTEXT: probability that a training sample is given as a lone slice (both
    # neighbours replaced by the centre), so that single 2-D slices keep working.
    cfg.INPUT.AUG.DROP_CONTEXT = 0.0
    # Percentile intensity normalisation of each slice to uint8 (see lumbar_d2.data.imageio).
    cfg.INPUT.NORMALIZE = True

    # Weight of the soft-Dice term of lumbar_d2.modeling's DiceMaskRCNNConvUpsampleHead (used
    # only when MODEL.ROI_MASK_HEAD.NAME names that head; Detectron2's heads ignore it).
    cfg.MODEL.ROI_MASK_HEAD.DICE_WEIGHT = 1.0
