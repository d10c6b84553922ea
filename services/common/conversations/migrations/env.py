"""Alembic's environment: migrations run on the connection ``engine.migrate`` hands over, in the
transaction it holds (for PostgreSQL, under the advisory lock that orders starting replicas)."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from services.common.conversations.schema import metadata

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError(
        "run these migrations with services.common.conversations.migrate(engine), "
        "which passes the connection"
    )
# Batch mode: SQLite alters a table by copying it, and later migrations must work there too.
# Both databases roll DDL back with the transaction (alembic assumes SQLite does not).
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=True,
    transactional_ddl=True,
)
with context.begin_transaction():
    context.run_migrations()
