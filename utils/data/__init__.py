"""Data: ground truth (COCO json, index txt), sequence folders and windows, frame decoding, letterbox and
normalisation, augmentation, the training dataset, the synthetic generator and the labelled-video importer."""
