"""Measuring: a checkpoint on test scenes (``evaluate``), engines against the PyTorch reference (``bench``, with
``timing`` and ``reference``), reports and plots (``report``) and gate overlays (``overlay``)."""
