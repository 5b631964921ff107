"""Training the gate: the generalized batch-shaping loss (``loss``) and its Beta CDF numerics (``betainc``) and the
multi-process training loop (``train``). Evaluating a checkpoint is measuring: ``msvit_edge.measure.evaluate``."""
