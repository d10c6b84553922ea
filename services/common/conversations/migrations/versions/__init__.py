"""One module per schema change, oldest first (``down_revision`` chains them)."""
