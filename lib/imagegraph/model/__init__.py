"""The model artifact shared by training and inference: its files and metadata, where it is
stored, the per-worker cache that loads it, and its int8 calibration sample."""
