"""colorfilter: CoLoR-Filter pre-training data selection (arXiv 2406.10670)."""

__version__ = "0.1.0"
