"""The storage layer: one SQLite file via apsw (the only apsw importer in tinypds).

db (Database: writer thread, readers, backup), schema (migrations), blocks (block table and
a SQLite-backed BlockSource), records (record index), repo (apply a commit in one
transaction), events (firehose event log), accounts. No MST or commit logic lives here.
"""

from .db import Database, DatabaseError

__all__ = ["Database", "DatabaseError"]
