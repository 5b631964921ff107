"""Calibration data and precision passes (FP16 AutoCast, INT8 Q/DQ) for export bundles."""
