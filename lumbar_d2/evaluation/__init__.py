"""Evaluation: pure-numpy metrics, the Detectron2 Dice evaluator, reports, offline eval."""
