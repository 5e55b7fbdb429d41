"""Inference: loading input slices, running the predictor and writing results."""
