"""The plugin manager: built-in and third-party plugins come through one door, the
``stancerun`` entry-point group, and are loaded lazily, once.

``STANCERUN_LOAD_PLUGINS`` (comma-separated distribution names) limits which third-party
distributions load; the built-in plugins, shipped by the ``stancerun`` distribution, always do.
A name in it that no installed plugin distribution answers to is warned about.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import os
import warnings
from typing import Iterable

import pluggy

from stancerun import hookspecs, kinds
from stancerun.errors import UsageError, did_you_mean
from stancerun.registry.table import Clash, PluginInfo, Registry

ENTRY_POINT_GROUP = "stancerun"
ALLOW_ENV = "STANCERUN_LOAD_PLUGINS"
BUILTIN_DISTRIBUTION = "stancerun"

_registry: Registry | None = None


class PluginWarning(UserWarning):
    """A plugin failed to load, or the allow-list names a distribution that is not installed;
    runs that do not use it go on."""


def _normalize(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _allowed_names() -> list[str] | None:
    """The allow-list's names as written (None when it is unset)."""
    raw = os.environ.get(ALLOW_ENV)
    if raw is None:
        return None
    return list(dict.fromkeys(n.strip() for n in raw.split(",") if n.strip()))


def _allow_list() -> set[str] | None:
    names = _allowed_names()
    return None if names is None else {_normalize(n) for n in names}


def _plugin_distributions() -> list[tuple[str, str, list[importlib.metadata.EntryPoint]]]:
    """(distribution, version, its ``stancerun`` entry points) for each installed distribution that has some."""
    found, seen = [], set()
    for dist in importlib.metadata.distributions():
        dist_name = dist.metadata["Name"] or "?"
        key = _normalize(dist_name)
        if key in seen:  # the same distribution can sit twice on sys.path
            continue
        seen.add(key)
        eps = [ep for ep in dist.entry_points if ep.group == ENTRY_POINT_GROUP]
        if eps:
            found.append((dist_name, dist.version, eps))
    return found


def discover() -> list[tuple[importlib.metadata.EntryPoint, str, str]]:
    """Entry points of the ``stancerun`` group as (entry point, distribution, version), allow-list applied."""
    allowed = _allow_list()
    found = []
    for dist_name, version, eps in _plugin_distributions():
        key = _normalize(dist_name)
        if allowed is not None and key != BUILTIN_DISTRIBUTION and key not in allowed:
            continue
        found.extend((ep, dist_name, version) for ep in eps)
    # Built-ins first, so their names are the ones a clash message lists first.
    found.sort(key=lambda item: (_normalize(item[1]) != BUILTIN_DISTRIBUTION, item[1], item[0].name))
    return found


def unknown_allowed() -> dict[str, str]:
    """The allow-list's names (as written) that no installed plugin distribution answers to, each
    with a message saying so: a typo there would otherwise leave a plugin out in silence."""
    names = _allowed_names()
    if not names:  # unset or empty: nothing to look up, and no second scan of sys.path
        return {}
    installed = sorted(name for name, _, _ in _plugin_distributions() if _normalize(name) != BUILTIN_DISTRIBUTION)
    known = {_normalize(n) for n in installed} | {BUILTIN_DISTRIBUTION}
    return {name: f"{ALLOW_ENV} names '{name}', which no installed plugin distribution is; "
                  f"installed plugin distributions: {', '.join(installed) or 'none besides stancerun'}"
            for name in names if _normalize(name) not in known}


def build_registry(plugins: Iterable[tuple[str, object, str, str]], strict: bool = True) -> Registry:
    """A registry from (plugin name, module or loader, distribution, version) tuples.

    A plugin whose import or hooks raise, or that has a hook stancerun does not know (misspelled,
    or not marked ``@stancerun.hookimpl``), is recorded with its error and skipped. Two plugins
    that claim one name (a component's or a plugin's) raise :class:`UsageError`; with
    ``strict=False`` (for ``stancerun plugins``, which must show what is wrong rather than stop
    on it) the first claimant keeps the name and the clash is recorded in ``registry.clashes``.
    """
    registry = Registry(strict=strict)
    pm = pluggy.PluginManager("stancerun")
    pm.add_hookspecs(hookspecs)
    _add_plugins(pm, registry, plugins, strict)
    _call_hooks(pm, registry, strict)
    return registry


def _add_plugins(pm: pluggy.PluginManager, registry: Registry, plugins, strict: bool) -> None:
    """Import each plugin and hand it to pluggy, whose hooks must all be stancerun's."""
    pm_dists: dict[str, str] = {}
    for name, module, dist, version in plugins:
        info = PluginInfo(name, dist, version)
        registry.plugins.append(info)
        try:
            if callable(getattr(module, "load", None)) and hasattr(module, "group"):
                module = module.load()  # an entry point: importing is part of loading
            if pm.has_plugin(name):
                clash = Clash("plugin", name, (pm_dists[name], dist),
                              f"two plugins are named '{name}': one from '{pm_dists[name]}' and one from '{dist}'; "
                              f"uninstall one, or leave it out with {ALLOW_ENV}")
                if strict:
                    raise UsageError(clash.message)
                registry.clashes.append(clash)
                info.error = f"not loaded: its name is taken by plugin '{name}' of '{pm_dists[name]}'"
                continue
            unmarked_hooks(module)
            pm.register(module, name=name)
            try:
                pm.check_pending()  # a marked function whose name is no hook of stancerun's
            except pluggy.PluginValidationError as error:
                message = unknown_hooks(pm)
                pm.unregister(name=name)
                raise pluggy.PluginValidationError(module, message) from error
            pm_dists[name] = dist
        except UsageError:
            raise
        except Exception as error:  # a broken plugin must not break runs that do not use it
            _record_failure(info, error)


#: The hooks a plugin may implement, one per kind.
HOOKS = tuple(kind.hook for kind in kinds.KINDS)


def unmarked_hooks(module) -> None:
    """A function named like a hook but not marked ``@stancerun.hookimpl``: pluggy would pass
    over it in silence, and the plugin would register nothing."""
    for attribute in dir(module):
        value = getattr(module, attribute, None)
        if (attribute.startswith("stancerun_register") and inspect.isroutine(value)
                and not hasattr(value, "stancerun_impl")):
            known = "" if attribute in HOOKS else f" (and no hook of stancerun's; {_hook_hint(attribute)})"
            raise pluggy.PluginValidationError(module, f"'{attribute}' is not marked @stancerun.hookimpl, so it would "
                                                       f"never be called{known}")


def unknown_hooks(pm: pluggy.PluginManager) -> str:
    """What :meth:`pluggy.PluginManager.check_pending` found, said with the hook's name."""
    names = [name for name, caller in vars(pm.hook).items()
             if not name.startswith("_") and not caller.has_spec() and caller.get_hookimpls()]
    return "; ".join(f"unknown hook '{name}' ({_hook_hint(name)})" for name in names)


def _hook_hint(name: str) -> str:
    return did_you_mean(name, HOOKS) or f"the hooks are {', '.join(HOOKS)}"


def _call_hooks(pm: pluggy.PluginManager, registry: Registry, strict: bool) -> None:
    """Each plugin's hooks, kind by kind, each with a ``register`` that files under that plugin."""
    for kind in kinds.KINDS:
        for impl in getattr(pm.hook, kind.hook).get_hookimpls():
            info = next(p for p in registry.plugins if p.name == impl.plugin_name)

            def register(component_name, factory, _kind=kind.name, _plugin=impl.plugin_name):
                registry.register(_kind, component_name, factory, _plugin)

            try:
                impl.function(register=register)
            except UsageError as error:
                if strict:
                    raise
                _record_failure(info, error)  # an invalid registration: listed as the plugin's error
            except Exception as error:
                _record_failure(info, error)


def _record_failure(info: PluginInfo, error: Exception) -> None:
    info.error = f"{type(error).__name__}: {error}"
    warnings.warn(f"plugin '{info.name}' ({info.distribution}) failed to load: {info.error}", PluginWarning, stacklevel=4)


def load(strict: bool = True) -> Registry:
    """A fresh registry of every installed plugin the allow-list lets in (see :func:`build_registry`)."""
    registry = build_registry(((ep.name, ep, dist, version) for ep, dist, version in discover()), strict=strict)
    if not any(p.distribution.lower() == BUILTIN_DISTRIBUTION for p in registry.plugins):
        warnings.warn(
            "stancerun's built-in plugins were not found: install the project (pip install -e .)",
            PluginWarning,
            stacklevel=3,
        )
    return registry


def get_registry() -> Registry:
    """The registry of every installed plugin, built on first use and kept."""
    global _registry
    if _registry is None:
        _registry = load()
        for message in unknown_allowed().values():
            warnings.warn(message, PluginWarning, stacklevel=2)
    return _registry


def reset() -> None:
    """Forget the loaded plugins (tests change the environment and load again)."""
    global _registry
    _registry = None
