"""Alembic migrations of the conversation store, run by ``engine.migrate`` (no alembic.ini)."""
