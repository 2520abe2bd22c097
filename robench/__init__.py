"""robench: evaluate PyTorch image classifiers against many threats at once."""
__version__ = "0.1.0"
