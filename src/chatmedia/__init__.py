"""chatmedia: a self-hosted file and media service for chat platforms."""

__version__ = "0.1.0"
