"""The web player: an avatar as one self-contained HTML page (`export.export_web`), played by
WebGL2 in any browser with the head model's posing and the splat shaders of ``shaders/``."""
