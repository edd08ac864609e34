"""Generators: everything that turns sources into UV-layout Gaussians (`UVGaussians`)."""
