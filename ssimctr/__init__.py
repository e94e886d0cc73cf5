"""ssimctr: an experiment runner for multi-scenario CTR prediction."""

__version__ = "0.1.0"
