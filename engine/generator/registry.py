"""The feed-forward generators' registry and the choice of one (`GeneratorChoice`). Plain data,
importable without torch, so the command line offers the registry's names as choices.

Adding a generator is its function, ``f(model, sources, shape, checkpoint, outer) ->
AnimatedAvatar``, and one `KINDS` line naming it; `engine.generator.api.generate` runs it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal


@dataclass(frozen=True)
class GeneratorKind:
    name: str
    entry: str                      # "module:function", imported when the generator runs
    needs_checkpoint: bool = False  # trained weights (a file `python main.py train` wrote)


KINDS: dict[str, GeneratorKind] = {k.name: k for k in (
    GeneratorKind("projective", "engine.generator.api:projective_avatar"),
    GeneratorKind("network", "engine.generator.api:network_avatar", needs_checkpoint=True),
)}
GeneratorName = Literal[tuple(KINDS)]  # type: ignore[valid-type] - the registry's names, for options


@dataclass(frozen=True)
class GeneratorChoice:
    """Which generator builds avatars, and its checkpoint when it needs one: one value where a
    (name, checkpoint) pair would otherwise travel through every signature."""

    kind: str = "projective"
    checkpoint: Path | None = None

    def check(self) -> None:
        """ValueError for an unknown generator, or one that needs a checkpoint without an existing
        file (before anything slow runs)."""
        kind = KINDS.get(self.kind)
        if kind is None:
            raise ValueError(f"unknown generator {self.kind!r}; choose one of {', '.join(KINDS)}")
        if kind.needs_checkpoint and self.checkpoint is None:
            raise ValueError(f"the {self.kind} generator needs a checkpoint (--checkpoint PATH, a file written by "
                             "`python main.py train`; docs/training.md)")
        if self.checkpoint is not None and not Path(self.checkpoint).is_file():
            raise ValueError(f"checkpoint {self.checkpoint} does not exist")

    def __str__(self) -> str:
        return self.kind + (f" ({self.checkpoint})" if self.checkpoint is not None else "")


PROJECTIVE = GeneratorChoice()
"""The parameter-free projective stage: the default everywhere."""
