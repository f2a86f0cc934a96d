"""tinypds: a one-process, one-account AT Protocol PDS on one SQLite file."""

__version__ = "0.1.0"
