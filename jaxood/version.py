"""The package version (its own module so any layer can read it without importing the package
facade ``jaxood/__init__``)."""

__version__ = "0.2.0"
