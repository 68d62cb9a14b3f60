"""charrnn: train, sample and evaluate character-level RNN language models."""

__version__ = "0.1.0"
