"""Measuring engines: latency timing (``timing``), the bench run (``bench``), the PyTorch reference it compares with
(``reference``), reports and plots (``report``) and gate overlays (``overlay``)."""
