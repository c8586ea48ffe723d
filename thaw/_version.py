"""thaw's version, in a module that imports nothing, so any floor of the package can read it
without importing the package root (``thaw.__version__`` is this same string)."""

__version__ = "0.1.0"
