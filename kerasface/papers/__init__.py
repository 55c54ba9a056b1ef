"""Paper recipes: one file per paper, each registering `fn(demo: bool) -> PaperConfig`."""

from kerasface.registry import Registry

PAPERS: Registry = Registry("paper")

from kerasface.papers import canal_mtfl  # noqa: E402,F401  (registration)
