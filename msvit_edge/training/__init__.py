"""Training the gate: the generalized batch-shaping loss (``loss``) and its Beta CDF numerics (``betainc``), and the
multi-process training run (``train``, which the package and its users import from). ``train``'s parts: ``config``
(``TrainConfig``), ``step`` (one optimisation step, the flip gate gradient, AdamW and its schedule), ``objective`` (the
task loss: classification or pixel cross-entropy), ``loaders`` (training and validation images), ``validation``
(top-1 or mIoU from ``msvit_edge.bundle.metrics``, tokens, the calibrated threshold), ``state`` (the initial
model, resumable per-epoch state), ``distributed`` (torchrun, devices, DDP), ``log`` (train.jsonl, progress bars).
Evaluating a checkpoint is measuring: ``msvit_edge.measure.evaluate``."""
