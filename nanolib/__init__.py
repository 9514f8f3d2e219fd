"""nanolib: the small shared library behind The Compute Dial."""

__version__ = "0.1.0"
