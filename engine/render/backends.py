"""The renderer backends' registry: each one's name, module and role. Plain data, importable
without torch, so the command line offers the registry's names as choices and their help
follows it. `engine.render.select` makes and chooses them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Backend:
    """A registered renderer backend. Its module, ``engine.render.<module>``, is imported only
    when the backend is considered and defines ``make(device, need_grad) -> Renderer``, which
    raises `RendererUnavailable` saying why it cannot run there. Adding a backend is its module
    and one line in `BACKENDS`; the command-line choices, the app's and every help text follow."""

    name: str
    module: str
    live: bool = True       # may draw the app's stage (False: it needs a context of its own beside the windows')


BACKENDS: dict[str, Backend] = {b.name: b for b in (   # the automatic choice tries them in this order
    Backend("gsplat", "gsplat_backend"),
    Backend("native", "native"),
    Backend("gl", "gl_backend", live=False),        # its headless EGL context beside GLX windows crashes Mesa
    Backend("reference", "reference"),
)}
ORDER = tuple(BACKENDS)
BackendName = Literal[ORDER]  # type: ignore[valid-type] - the registry's names, for options and their help
