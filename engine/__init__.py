"""SpatialAvatar-0 engine: head models, Gaussian binding, renderers, avatar files.

Pure torch + numpy. It never imports the app (`spatialavatar_app`) or Dear PyGui.
"""
