"""Reading and writing avatars (``.savatar`` bundles), 3DGS ``.ply`` point clouds and
head-parameter sequences (``.npz``). Every reader raises :class:`AvatarFileError` on a bad file;
every writer replaces its target atomically."""
from engine.atomic import check_writable
from engine.io.bundle import load_avatar, save_avatar
from engine.io.errors import AvatarFileError
from engine.io.params import load_params, save_params
from engine.io.ply import export_ply, read_ply

__all__ = ["AvatarFileError", "check_writable", "save_avatar", "load_avatar", "export_ply", "read_ply", "save_params", "load_params"]
