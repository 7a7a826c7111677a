"""Training: the command line and its typed configurations, the trainer, weights and resume files, the run's history
and folder lock, and the distributed helpers."""
