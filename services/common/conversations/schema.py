"""The tables, in SQLAlchemy Core: the one description that queries and migrations share.

A migration in ``migrations/versions/`` creates exactly this (a test compares the migrated
database with ``metadata``), so a change here needs a new migration beside it.
"""

from __future__ import annotations

import sqlalchemy as sa

__all__ = ["conversations", "items", "metadata"]

metadata = sa.MetaData(
    # Stable constraint names, so later migrations can name what they alter on every database.
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

conversations = sa.Table(
    "conversations",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("tenant", sa.String(256), nullable=False),
    sa.Column("title", sa.String(256), nullable=True),
    sa.Column("created", sa.Double(), nullable=False),
    sa.Column("updated", sa.Double(), nullable=False),
    # A tenant's page, newest first: (updated, id) is the keyset ``list`` pages by.
    sa.Index(None, "tenant", "updated", "id"),
)

items = sa.Table(
    "items",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column(
        "conversation_id",
        sa.String(64),
        sa.ForeignKey("conversations.id", ondelete="CASCADE"),
        nullable=False,
    ),
    # The conversation's tenant again: retention asks for one tenant's artifacts without a join.
    sa.Column("tenant", sa.String(256), nullable=False),
    sa.Column("position", sa.Integer(), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("text", sa.Text(), nullable=False),
    sa.Column("transcript", sa.Text(), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("artifact_ids", sa.JSON(), nullable=False),
    sa.Column("timings", sa.JSON(), nullable=True),
    # The idempotency key of the append that stored the item, and the item's index within that
    # append: one append may store several items under one key.
    sa.Column("request_key", sa.String(256), nullable=True),
    sa.Column("request_index", sa.Integer(), nullable=True),
    sa.Column("created", sa.Double(), nullable=False),
    # Also the index that reads a conversation's items in order.
    sa.UniqueConstraint("conversation_id", "position"),
    # A retried append cannot store its items twice, even from two replicas at once.
    sa.Index(
        "uq_items_conversation_id_request_key",
        "conversation_id",
        "request_key",
        "request_index",
        unique=True,
        sqlite_where=sa.text("request_key IS NOT NULL"),
        postgresql_where=sa.text("request_key IS NOT NULL"),
    ),
)
