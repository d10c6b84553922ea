"""Image service settings, read from ``CHORUS_IMAGE_*`` environment variables."""

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from services.catalog import BY_NAME
from services.image.backends import SettingsBase

_CATALOG = BY_NAME["image"]


# ``backend`` and each backend's own section (CHORUS_IMAGE_DIFFUSERS__DTYPE...) come from the
# registry, BACKENDS in services/image/backends/__init__.py.
class ImageSettings(SettingsBase):
    model_config = SettingsConfigDict(env_prefix=_CATALOG.env_prefix, extra="ignore")

    port: int = Field(default=_CATALOG.port, ge=0, le=65535)
    model: str = "tiny-random-sd"
    """Default model. diffusers: a folder written by ``save_pretrained`` or a hub id such as
    ``stabilityai/sd-turbo`` or ``stabilityai/stable-diffusion-xl-base-1.0`` (downloaded once
    into the Hugging Face cache; needs the network). ``tiny-random-sd`` is an offline
    random-weight Stable Diffusion (it draws noise) that proves the whole path without weights.
    hf-inference: a hub model id served by the API."""
    extra_models: list[str] = Field(default_factory=list)
    """More models callers may pick with the request's ``model`` field (loaded on first use)."""
    cache_dir: Path = Path.home() / ".cache" / "chorus" / "models"
    """Where the offline ``tiny-random-sd`` pipeline is written once."""

    device: str = "cpu"
    """diffusers' torch device: cpu, cuda, cuda:1, mps."""

    # request defaults and limits
    default_width: int | None = Field(default=None, ge=8, le=8192)
    """What a request with width 0 gets. Unset: the model's native width (its pipeline's own
    default, scaled down to fit max_side; 512 for a hosted model the service does not know).
    Drawing a tiny model's noise at 512x512 made an offline turn wait 25 s for nothing."""
    default_height: int | None = Field(default=None, ge=8, le=8192)
    """As ``default_width``."""
    default_steps: int | None = Field(default=None, ge=1, le=1000)
    """What a request with steps 0 gets. Unset: the model's own default (1 for turbo models,
    4 for the offline placeholder, see ``services/image/models.py``), else 20; at most
    max_steps."""
    default_guidance_scale: float = Field(default=7.5, ge=0, le=30)
    max_side: int = Field(default=1024, ge=8, le=8192)
    """Largest width or height."""
    max_steps: int = Field(default=50, ge=1, le=1000)
    max_images: int = Field(default=4, ge=1, le=64)
    """Images per call."""
    max_prompt_chars: int = Field(default=1000, ge=1, le=100_000)
    progress_interval_ms: int = Field(default=250, ge=0, le=60_000)
    """Least time between two progress events of a call (the first and last step are always
    reported); 0 reports every step. Each event wakes the event loop and the network while the
    model computes: per-step events slowed a 2-core machine's steps by 8%."""

    @model_validator(mode="after")
    def _check(self) -> "ImageSettings":
        for name in ("default_width", "default_height"):
            value = getattr(self, name)
            if value is not None and (value % 8 or value > self.max_side):
                raise ValueError(f"{name} must be a multiple of 8 and at most max_side")
        if self.default_steps is not None and self.default_steps > self.max_steps:
            raise ValueError("default_steps must not exceed max_steps")
        return self

    def all_models(self) -> list[str]:
        return list(dict.fromkeys([self.model, *self.extra_models]))
