"""Evaluation protocols (feed-forward self-reenactment; the refiner's held-out frames later)."""
