"""Tests of autotune.store: the storage conformance suite on SQLite and PostgreSQL, migrations,
database faults, heartbeats."""
