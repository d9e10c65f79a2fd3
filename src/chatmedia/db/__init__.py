"""Metadata storage: the database handle, the schema and one repository per table group."""

from chatmedia.db.engine import Database, DatabaseUnavailable

__all__ = ["Database", "DatabaseUnavailable"]
