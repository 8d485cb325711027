"""Name -> factory, per component kind, with the plugin that registered each name."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from stancerun import kinds
from stancerun.errors import UsageError, did_you_mean
from stancerun.hookspecs import KINDS

#: Singular nouns for messages ("unknown metric 'acuracy'").
NOUNS = {kind.name: kind.noun for kind in kinds.KINDS}


@dataclass(frozen=True)
class Component:
    kind: str
    name: str
    factory: Callable
    plugin: str


@dataclass(frozen=True)
class Clash:
    """Two plugins that claim one name. A strict registry raises it; a lenient one (for
    `stancerun plugins`) keeps the first claimant and records it."""

    kind: str  # a noun ("metric", ...), or "plugin" when two plugins share a plugin name
    name: str
    between: tuple[str, str]  # the two plugins; for kind "plugin", their two distributions
    message: str


@dataclass
class PluginInfo:
    name: str
    distribution: str
    version: str
    error: str | None = None  # set when the plugin failed to import or register


@dataclass
class Registry:
    components: dict[str, dict[str, Component]] = field(default_factory=lambda: {k: {} for k in KINDS})
    plugins: list[PluginInfo] = field(default_factory=list)
    strict: bool = True  # False: clashes are recorded in `clashes` instead of raised
    clashes: list[Clash] = field(default_factory=list)

    def register(self, kind: str, name: str, factory: Callable, plugin: str) -> None:
        if not isinstance(name, str) or not name:
            raise UsageError(f"plugin '{plugin}' registered a {NOUNS[kind]} with an invalid name {name!r}")
        if not callable(factory):
            raise UsageError(f"plugin '{plugin}' registered {NOUNS[kind]} '{name}' with a factory that is not callable")
        existing = self.components[kind].get(name)
        if existing is not None:
            # Never rename or shadow silently: which one runs would depend on install order.
            clash = Clash(NOUNS[kind], name, (existing.plugin, plugin),
                          f"{NOUNS[kind]} '{name}' is registered by two plugins: '{existing.plugin}' and '{plugin}'; "
                          f"uninstall one, or list the one you want in STANCERUN_LOAD_PLUGINS")
            if self.strict:
                raise UsageError(clash.message)
            self.clashes.append(clash)
            return
        self.components[kind][name] = Component(kind, name, factory, plugin)

    def get(self, kind: str, name: str) -> Component:
        try:
            return self.components[kind][name]
        except KeyError:
            raise UsageError(self.unknown_message(kind, name)) from None

    def unknown_message(self, kind: str, name) -> str:
        known = sorted(self.components[kind])
        text = f"unknown {NOUNS[kind]} {name!r}; known: {', '.join(known) or 'none'}"
        broken = [p.name for p in self.plugins if p.error]
        if broken:
            text += f" (plugins that failed to load: {', '.join(broken)})"
        return text

    def suggest(self, kind: str, name) -> str | None:
        return did_you_mean(name, self.components[kind])

    def plugin(self, name: str) -> PluginInfo:
        return next(p for p in self.plugins if p.name == name)

    def names(self, kind: str) -> list[str]:
        return sorted(self.components[kind])

    def by_plugin(self, plugin: str) -> dict[str, list[str]]:
        """What one plugin registered, kind -> names."""
        found: dict[str, list[str]] = {}
        for kind in KINDS:
            for name, component in sorted(self.components[kind].items()):
                if component.plugin == plugin:
                    found.setdefault(kind, []).append(name)
        return found
