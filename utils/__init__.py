"""Everything the scripts share apart from the model itself, grouped by job.

- ``utils.data``: ground truth, sequence folders, frame decoding, letterbox, augmentation, the training dataset,
  synthetic data and the video importer.
- ``utils.train``: the training command line and its typed configurations, the trainer, run files, history,
  distributed helpers.
- ``utils.infer``: frame sources, the inference engine, evaluation and metrics, the ready detector, drawing.
- ``utils.deploy``: ONNX export, the graphs' format and the ONNX Runtime backend.
- ``utils.runtime``: command-line plumbing, atomic files, devices and threads, memory estimates, signals, plots.

Four leaf modules stay at the top because ``nets`` may use them: ``errors`` (the one-line error type), ``boxes``,
``model_spec`` (what a model is) and ``sidecar`` (the weights' metadata format).
"""
