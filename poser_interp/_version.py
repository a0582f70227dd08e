"""The toolkit's version (a leaf module: the results manifest records it without importing the package)."""

__version__ = "0.1.0"
