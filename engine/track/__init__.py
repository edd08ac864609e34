"""Tracking: landmarks, mattes and head-model fitting (see the tracker issue)."""
