"""TarDiff: influence-guided diffusion for synthetic ICU time series."""

__version__ = "0.1.0"
