"""Data, boxes, metrics, training and inference utilities for SSTNet."""
