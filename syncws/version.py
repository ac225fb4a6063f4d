"""The version of syncws, kept in one place for setup.cfg and the package."""

__version__ = "0.1.0"
