"""Training the gate: the generalized batch-shaping loss (``loss``) and its Beta CDF numerics (``betainc``), the
multi-process training loop (``train``) and evaluation of a checkpoint (``evaluate``)."""
