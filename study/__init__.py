"""srstudy: Ray-distributed hyper-parameter studies for efficient Mamba super-resolution."""

__version__ = "0.1.0"
