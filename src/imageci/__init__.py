"""imageci: continuous integration for OS and container images."""

__version__ = "0.1.0"
