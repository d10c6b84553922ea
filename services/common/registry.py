"""Backend registries: one per model kind, the one place that kind's backends are listed.

Each kind used to name its backends twice, by hand: a ``Literal`` in its settings and an
if-chain in ``backends/__init__.py`` whose last branch took whatever was left. Now
``services/<kind>/backends/__init__.py`` holds a ``Registry`` of ``Backend`` entries (name,
factory, settings section) and everything else reads it:

* the kind's settings inherit ``Registry.settings_base``: the ``backend`` field, whose allowed
  values are the registry's names (an unknown name fails at start and lists the known ones),
  and one nested section per backend that has knobs (``CHORUS_TTS_PIPER__SPIN_WAIT``);
* the service builds the configured backend with ``Registry.factory`` and
  ``Registry.options`` (its section, already validated).

Factories import their engine lazily, so a replica imports only the engine it runs (the
optional ones, openai-whisper and Coqui, may not even be installed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from pydantic import BaseModel, Field, create_model, field_validator

__all__ = ["Backend", "Configured", "Factory", "Registry", "UnknownBackendError"]

F = TypeVar("F")
M = TypeVar("M")
S = TypeVar("S", bound=BaseModel)


class Configured(Protocol):
    """A kind's settings, as the registry reads them: the configured backend's name (and, by
    attribute, each backend's section)."""

    backend: str


class UnknownBackendError(ValueError):
    """A backend name no registry entry has; the message lists the known ones."""


@dataclass(frozen=True)
class Factory(Generic[M]):
    """How a model service builds one backend's models (``M``: the kind's Protocol)."""

    load: Callable[[Any, Any, str], M]
    """(the service's settings, the backend's section or None, model name) -> a loaded model.
    Imports the engine inside, so only the configured one is ever imported."""
    describe: Callable[[Any, Any, str], str] | None = None
    """Same arguments: what ListModels says about a model before it is loaded."""


@dataclass(frozen=True)
class Backend(Generic[F]):
    """One backend of a model kind."""

    name: str
    """The value of ``CHORUS_<KIND>_BACKEND`` that picks it."""
    factory: F
    """Builds it from the kind's settings and this backend's section (imports lazily)."""
    settings: type[BaseModel] | None = None
    """Its own knobs, nested under its name; None when it has none."""

    @property
    def section(self) -> str:
        """The settings field of its section: ``openai-api`` -> ``openai_api``, so its
        environment variables are ``CHORUS_STT_OPENAI_API__*``."""
        return self.name.replace("-", "_")


class Registry(Generic[F]):
    """The backends of one model kind, by name, in the order they are documented."""

    def __init__(self, kind: str, backends: Sequence[Backend[F]]) -> None:
        """Raises:
        ValueError: two backends share a name or a section (a programming error, caught at
            import).
        """
        self.kind = kind
        self._backends = {b.name: b for b in backends}
        if len(self._backends) != len(backends):
            raise ValueError(f"{kind}: two backends share a name")
        if len({b.section for b in backends}) != len(backends):
            raise ValueError(f"{kind}: two backends share a settings section")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._backends)

    def __iter__(self) -> Iterator[Backend[F]]:
        return iter(self._backends.values())

    def get(self, name: str) -> Backend[F]:
        """The entry called ``name``.

        Raises:
            UnknownBackendError: no backend has that name; the message lists those that do.
        """
        try:
            return self._backends[name]
        except KeyError:
            known = ", ".join(self.names)
            raise UnknownBackendError(
                f"unknown {self.kind} backend {name!r}; known: {known}"
            ) from None

    def factory(self, name: str) -> F:
        return self.get(name).factory

    def options(self, settings: Configured) -> Any:
        """The configured backend's section of ``settings`` (validated with the rest of them),
        or None for a backend without knobs."""
        backend = self.get(settings.backend)
        return getattr(settings, backend.section) if backend.settings is not None else None

    def loader(self: Registry[Factory[M]], settings: Configured, model: str) -> Callable[[], M]:
        """A function that loads ``model`` with the configured backend (for ModelManager)."""
        load = self.factory(settings.backend).load
        options = self.options(settings)
        return lambda: load(settings, options, model)

    def describe(self: Registry[Factory[M]], settings: Configured, model: str) -> str:
        """What ListModels says about ``model`` before it is loaded ("" if the backend has
        nothing to say)."""
        describe = self.factory(settings.backend).describe
        return describe(settings, self.options(settings), model) if describe else ""

    def settings_base(self, base: type[S], default: str) -> type[S]:
        """``base`` plus the fields the registry owns, for the kind's settings to inherit: the
        ``backend`` field (default ``default``, checked against the registry's names) and one
        section per backend with knobs, each with its defaults.

        Type checkers cannot follow a generated class: the kind's registry module hands them
        ``base`` itself (``BackendServiceSettings``) under ``TYPE_CHECKING``.
        """
        self.get(default)
        fields: dict[str, Any] = {
            "backend": (
                str,
                Field(
                    default=default,
                    description=f"The {self.kind} engine; one of: {', '.join(self.names)}.",
                    json_schema_extra={"enum": list(self.names)},
                ),
            )
        }
        for backend in self:
            if backend.settings is not None:
                fields[backend.section] = (
                    backend.settings,
                    Field(default_factory=backend.settings),
                )

        def known(cls: type[BaseModel], name: str) -> str:
            return self.get(name).name  # UnknownBackendError is a ValueError: pydantic reports it

        return create_model(
            f"{base.__name__}With{self.kind.title()}Backends",
            __base__=base,
            __module__=base.__module__,
            __validators__={"_known_backend": field_validator("backend")(known)},
            **fields,
        )
