"""Gaussian splatting renderers. Import-light: no backend (gsplat) is imported here."""
from engine.render.base import RenderOptions, Renderer
from engine.render.projection import Projected, project_gaussians
from engine.render.reference import ReferenceRenderer
from engine.render.select import select  # noqa: E402 - the function shadows its module on purpose

__all__ = ["Renderer", "RenderOptions", "ReferenceRenderer", "project_gaussians", "Projected", "select"]
