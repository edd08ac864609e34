"""SpatialAvatar-0's front ends: the command line (`cli`) and, later, the desktop app."""
