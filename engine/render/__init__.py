"""Gaussian splatting renderers: the `Renderer` protocol (`base`), the backends and their
registry (`backends`, read without importing torch, for the command line's choices), and the
choice among them (`select`). Import-light: importing the package imports nothing."""
