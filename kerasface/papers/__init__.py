"""Paper recipes: one file per paper, each registering a `Recipe`: the paper's settings and its
named variants (`--paper KEY:VARIANT`, e.g. `canal_mtfl:cpu`, `canal_mtfl:demo`).

A recipe whose settings come from the command line (`custom`: the architecture, the user's data,
the tasks) declares its own options and a `configure` hook: `kerasface.train` adds the options to
its parser and hands the parsed arguments to the hook, so the trainer never tests recipe names.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from kerasface.config import PaperConfig
from kerasface.registry import Registry


@dataclass(frozen=True)
class Recipe:
    name: str
    build: Callable[[], PaperConfig]  # the paper's own settings
    # variant name -> (one-line description, function of the paper's config)
    variants: dict[str, tuple[str, Callable[[PaperConfig], PaperConfig]]] = field(default_factory=dict)
    # `kerasface.train` options of this recipe: flag ("--arch") -> argparse keyword arguments
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    # configure(config, parsed arguments) -> config: applies the options (before --set overrides)
    configure: Callable[[PaperConfig, argparse.Namespace], PaperConfig] | None = None

    def config(self, variant: str = "") -> PaperConfig:
        cfg = self.build()
        if not variant:
            return cfg
        if variant not in self.variants:
            known = ", ".join(self.variants) or "(none)"
            raise KeyError(f"unknown variant {self.name}:{variant}; {self.name} has: {known}")
        return replace(self.variants[variant][1](cfg), variant=variant)


PAPERS: Registry[Recipe] = Registry("paper")


def register_paper(name: str, variants: dict | None = None, options: dict | None = None,
                   configure: Callable | None = None):
    """Decorator for a recipe's config factory: `@register_paper("key", variants={...})`; a recipe
    configured from the command line adds `options` and `configure` (see Recipe)."""

    def add(build: Callable[[], PaperConfig]):
        PAPERS.register(name)(Recipe(name, build, dict(variants or {}), dict(options or {}), configure))
        return build

    return add


def paper_config(spec: str, demo: bool = False) -> PaperConfig:
    """The config `--paper KEY[:VARIANT]` names; `--demo` is the same as the variant `demo`."""
    name, _, variant = spec.partition(":")
    if demo and variant and variant != "demo":
        raise KeyError(f"--demo picks the variant {name}:demo; it cannot be combined with {spec!r}")
    return PAPERS.get(name).config(variant or ("demo" if demo else ""))


from kerasface.papers import canal_mtfl, custom, flickr_depth, gnet_snet, sang_bknet, wang_joint  # noqa: E402,F401  (registration)
