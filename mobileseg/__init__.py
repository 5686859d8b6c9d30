"""mobileseg: efficient segmentation networks from PyTorch to on-device runtimes, with proof of parity."""

__version__ = "0.1.0"
