"""Storage: the local SQLite event store (one writer, group commit), its reads and migrations."""
