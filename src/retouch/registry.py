"""Providers by name, loaded lazily.

Built-in providers are listed here as ``module:attribute`` strings, so listing them imports
nothing heavy; third-party packages add theirs under the entry-point group
``retouch.providers`` (value ``package.module:ProviderClass``). A name registered twice is
a ConfigurationError naming both sources. Instances can be injected directly (tests, apps
that configure a provider themselves).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from importlib import metadata
from typing import Any, Union

from retouch.errors import ConfigurationError, InvalidRequest
from retouch.types import Operation, Provider

ENTRY_POINT_GROUP = "retouch.providers"

BUILTIN: Mapping[str, str] = {
    "classic": "retouch.providers.classic:ClassicProvider",
    "realesrgan": "retouch.providers.realesrgan:RealESRGANProvider",
    "u2net": "retouch.providers.u2net:U2NetProvider",
    "masks": "retouch.providers.masks:MasksProvider",
    "lama": "retouch.providers.lama:LamaProvider",
    "faces": "retouch.providers.faces:FacesProvider",
    "facedetect": "retouch.providers.facedetect:FaceDetectProvider",
    "sam": "retouch.providers.sam:SamProvider",
    "clipseg": "retouch.providers.clipseg:ClipSegProvider",
    "stylize": "retouch.providers.stylize:StylizeProvider",
    "adjust": "retouch.providers.adjust:AdjustProvider",
    "openai": "retouch.providers.openai:OpenAIProvider",
    "stability": "retouch.providers.stability:StabilityProvider",
    "automatic1111": "retouch.providers.automatic1111:Automatic1111Provider",
    "replicate": "retouch.providers.replicate:ReplicateProvider",
    "vertex": "retouch.providers.vertex:VertexProvider",
    "comfyui": "retouch.providers.comfyui:ComfyUIProvider",
    "firefly": "retouch.providers.firefly:FireflyProvider",
    "diffusers": "retouch.providers.diffusion:DiffusersProvider",
}

ProviderSource = Union[str, Provider, Callable[[], Provider]]  # noqa: UP007 - runtime alias


class Registry:
    def __init__(
        self,
        providers: Mapping[str, ProviderSource] | None = None,
        *,
        builtins: bool = True,
        entry_points: bool = True,
    ) -> None:
        self._sources: dict[str, ProviderSource] = {}
        self._origins: dict[str, str] = {}
        self._loaded: dict[str, Provider] = {}
        self._given = dict(providers or {})
        self._flags = (builtins, entry_points)
        if builtins:
            for name, target in BUILTIN.items():
                self.register(name, target, origin="retouch")
        if entry_points:
            for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
                dist = ep.dist.name if ep.dist is not None else "an unknown package"
                self.register(ep.name, ep.value, origin=f"entry point of {dist}")
        for name, source in (providers or {}).items():
            self.register(name, source, origin="the caller")

    def register(self, name: str, source: ProviderSource, *, origin: str = "the caller") -> None:
        if name in self._sources:
            raise ConfigurationError(
                f"provider {name!r} is registered twice: by {self._origins[name]} and by {origin}; "
                "uninstall one or register it under another name"
            )
        self._sources[name] = source
        self._origins[name] = origin

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as how it was made, not what it has loaded: a worker process builds the
        same registry and loads its own models."""
        return (_rebuild, (self._given, *self._flags))

    def names(self) -> list[str]:
        return sorted(self._sources)

    def get(self, name: str) -> Provider:
        if name in self._loaded:
            return self._loaded[name]
        try:
            source = self._sources[name]
        except KeyError:
            known = ", ".join(self.names())
            raise InvalidRequest(f"unknown provider {name!r}; known providers: {known}") from None
        provider = self._load(name, source)
        self._loaded[name] = provider
        return provider

    def _load(self, name: str, source: ProviderSource) -> Provider:
        target: object = source
        if isinstance(source, str):
            module_name, _, attr = source.partition(":")
            try:
                target = getattr(importlib.import_module(module_name), attr)
            except (ImportError, AttributeError) as exc:
                raise ConfigurationError(
                    f"provider {name!r} ({self._origins[name]}) failed to load from {source}: {exc}"
                ) from exc
        # A class also looks like a Provider to isinstance (it has the attributes): make one.
        if isinstance(target, Provider) and not isinstance(target, type):
            return target
        if callable(target):
            try:
                made = target()
            except Exception as exc:
                raise ConfigurationError(
                    f"provider {name!r} ({self._origins[name]}) failed to start: {exc}"
                ) from exc
            if isinstance(made, Provider):
                return made
        raise ConfigurationError(
            f"provider {name!r} ({self._origins[name]}) is not a provider: it needs `info`, "
            "`status()` and `run()`"
        )

    def supporting(self, operation: Operation) -> list[Provider]:
        """Providers that declare ``operation``, best first (priority, then name)."""
        found = [p for p in (self.get(n) for n in self.names()) if operation in p.info.operations]
        return sorted(found, key=lambda p: (-priority(p, operation), p.info.name))


def priority(provider: Provider, operation: Operation) -> int:
    """The provider's priority for ``operation``: the operation's own, else the provider's."""
    own = provider.info.operations[operation].priority
    return provider.info.priority if own is None else own


def _rebuild(
    providers: Mapping[str, ProviderSource], builtins: bool, entry_points: bool
) -> Registry:
    return Registry(providers, builtins=builtins, entry_points=entry_points)
