"""The per-subject refiner (paper §2.5)."""
