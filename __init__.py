"""avsuperb: extract an upstream once per dataset, then probe AV-SUPERB tasks from the store."""

__version__ = "0.1.0"
