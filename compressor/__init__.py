"""compressor: robust multi-teacher distillation of noisily labelled image classifiers."""
__version__ = "0.1.0"
