"""Text generation service: chat replies from local GGUF models or an OpenAI-compatible server."""
