"""autotune's own tables (SQLAlchemy models, sessions, migrations, reads and writes): private to
``autotune.store``, which hands out values, never these rows."""
