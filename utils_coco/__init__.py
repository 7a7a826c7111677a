"""Dataset scripts: COCO/index conversion and the synthetic dataset generator (run as files from the repo root)."""
