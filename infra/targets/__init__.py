"""The target registry: the `target` setting names one module of this package.

A target is a module `infra/targets/<name>.py` that exposes (CONTRACTS.md, "Infra target plug-in
interface"):

    NAME: str                               # the `target` value
    KEYS: tuple[infra.config.Key, ...]      # its own reranker:* keys (README's settings table lists them)
    def parse(r, common) -> Settings        # reads and checks its KEYS with the shared reader `r`
                                            # (r.string/integer/number/boolean/secret/..., r.problem(key,
                                            # msg) with the `pulumi config set` fix); `common` is the
                                            # shared StackConfig (target_settings still None). Never
                                            # raises: every problem is recorded, all are reported at once.
    SIZES                                   # its size table (smallest first), if the platform has one
    def deploy(name, cfg, spec) -> pulumi.ComponentResource
                                            # with outputs url, health_url, image_name, image_digest
                                            # (register_outputs) and `extra_outputs`, a dict of further
                                            # stack outputs (may be empty)

The Settings object becomes `cfg.target_settings`. Besides the target's own fields, the shared code
reads: `service_name` (the name of the service on the platform; the spec's name), `pulls_from_registry`
(whether the built image must be pushed to a registry) and, optionally, `shutdown_grace_seconds` (a
platform whose stop window is shorter than the stack's setting lowers RERANK_SHUTDOWN_GRACE_S with it).
A module may also define `RETIRED = {old_key: "what replaced it"}` for keys an earlier version read.

Helpers for targets: `infra.config.check_size()` (pick from SIZES, refuse a size too small for
infra/sizing.py and name the smallest that fits), `infra.config.refuse_scaling()` (the scaling keys a
platform cannot honour), `infra.config.check_registry_image()`; `_image.publish()` (build the flavour's
Dockerfile stage and push it, or take the pushed imageName); `_base.Deployment` (a ComponentResource whose
`finish(url, extra_outputs)` sets url/health_url and registers the outputs); `_keys` (keys several
targets read: `public`, `deletionProtection`).

Modules are found by scanning this package: a new platform is a new file here, nothing else changes.
Files starting with `_` are helpers, not targets.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from types import ModuleType

DEFAULT_TARGET = "docker"
_REQUIRED = ("NAME", "KEYS", "parse", "deploy")


@cache
def registry() -> dict[str, ModuleType]:
    found: dict[str, ModuleType] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if not all(hasattr(module, attribute) for attribute in _REQUIRED):
            continue  # a helper module that is not a target
        if module.NAME in found:
            raise RuntimeError(f"two target modules declare NAME={module.NAME!r}")
        found[module.NAME] = module
    return found


# Discovered when the package is first imported (the target modules import infra.config, which imports
# this package only inside functions).
TARGETS: dict[str, ModuleType] = registry()


def names() -> tuple[str, ...]:
    return tuple(registry())


def get_target(name: str) -> ModuleType:
    try:
        return registry()[name]
    except KeyError:
        raise KeyError(f"no target {name!r}; targets: {', '.join(names())}") from None


def all_keys():
    """The shared keys, then each target's own (a key several targets declare is listed once)."""
    from infra.config import COMMON_KEYS

    keys = list(COMMON_KEYS)
    seen = {key.name for key in keys}
    for module in registry().values():
        for key in module.KEYS:
            if key.name not in seen:
                seen.add(key.name)
                keys.append(key)
    return tuple(keys)


def retired_keys() -> dict[str, tuple[str, str]]:
    """Keys an earlier version read -> (target, what replaced them), from each module's `RETIRED`."""
    return {
        key: (name, replacement)
        for name, module in registry().items()
        for key, replacement in getattr(module, "RETIRED", {}).items()
    }


def key_owners() -> dict[str, set[str]]:
    """Target-owned key -> the targets that declare it."""
    owners: dict[str, set[str]] = {}
    for name, module in registry().items():
        for key in module.KEYS:
            owners.setdefault(key.name, set()).add(name)
    return owners
