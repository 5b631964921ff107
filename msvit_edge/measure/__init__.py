"""Measuring: a checkpoint on test scenes (``evaluate``, its report ``eval_report``), engines against the PyTorch
reference (``bench``: its settings ``config``, ``sources`` opened once, the ``images`` and PyTorch ``reference``
they are measured on, ``accuracy``, ``latency`` with ``timing``, ``power``), the bench report as a typed record
(``record``) and its files (``report``), and gate overlays (``overlay``)."""
