"""The machine a command runs on: CPU, GPU, backend versions (``environment``) and Jetson boards (``jetson``)."""
