"""Where jobs run: devices and nodes (`devices.py`, one DDP rule for training and prediction), Lightning's
predict loop with per-rank part files (`predict_loop.py`, `parts.py`)."""
