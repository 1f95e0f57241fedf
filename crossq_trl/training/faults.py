"""The errors that stop a training run on a fault, each saying what happened, what was kept and how to go on."""

from __future__ import annotations


class NonFiniteError(FloatingPointError):
    """A loss, the gradient norm, the parameters, or an observation, action or reward from the env became NaN or
    infinite. Training stops before a checkpoint could hold the bad values: the last checkpoint stays good."""


class EnvStepError(RuntimeError):
    """The env raised inside ``step`` (or one of its worker processes died). ``completed``: for a single env, the
    steps of the collected batch that succeeded before it (else ``None``); the env's own error is the ``__cause__``."""

    def __init__(self, message: str, completed: int | None = None) -> None:
        super().__init__(message)
        self.completed = completed


class CheckpointSaveError(OSError):
    """A checkpoint could not be written (disk full, permission denied, ...); the previous file is intact."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGTERM, SIGUSR1 or Ctrl-C stopped training after the current step, once a checkpoint was written.

    A ``KeyboardInterrupt``, so code that already handles Ctrl-C around ``learn`` handles preemption too.
    ``signal``: the signal's name; ``env_step``: where training stopped; ``checkpoint``: the file to resume
    from (``None`` without a checkpoint path)."""

    def __init__(self, message: str, *, signal: str, env_step: int, checkpoint: str | None) -> None:
        super().__init__(message)
        self.signal, self.env_step, self.checkpoint = signal, env_step, checkpoint
