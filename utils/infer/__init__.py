"""Inference: frame sources, the streaming/window engine, evaluation with the paper's metrics, the ready detector the
scripts build from their options, and drawing detections."""
