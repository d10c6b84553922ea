"""Container images: Dockerfile, entrypoint and health check."""
