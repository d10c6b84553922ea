"""The conversation store: conversations and their items, per tenant, in SQL (an SQLite file by
default, PostgreSQL for several replicas), so that orchestrator replicas keep no state.

``open_repository(ConversationSettings())`` opens the configured database and migrates it to
head. All SQL of the store lives in this package. Everything here is blocking I/O: call it off
the event loop (``asyncio.to_thread``).
"""

from services.common.conversations.engine import make_engine, migrate
from services.common.conversations.model import Conversation, Item, NewItem, Role, Status
from services.common.conversations.repository import ConversationLimits, ConversationRepository
from services.common.conversations.schema import metadata
from services.common.conversations.settings import ConversationSettings, open_repository

__all__ = [
    "Conversation",
    "ConversationLimits",
    "ConversationRepository",
    "ConversationSettings",
    "Item",
    "NewItem",
    "Role",
    "Status",
    "make_engine",
    "metadata",
    "migrate",
    "open_repository",
]
