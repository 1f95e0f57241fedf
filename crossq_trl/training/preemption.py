"""Stop requests from SIGTERM, SIGUSR1 and Ctrl-C, the signals a scheduler (SLURM, Kubernetes) or a user sends
before killing a job, turned into a callback so that training can end its step and checkpoint first."""

from __future__ import annotations

import signal
import threading
import warnings
from collections.abc import Callable
from types import FrameType

PREEMPTION_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGUSR1", "SIGINT") if hasattr(signal, name))


class StopOnSignals:
    """While active, the first of ``signals`` calls ``on_signal(name)`` instead of its usual action.

    The handlers that were installed before are put back on exit and as soon as a signal arrives, so a second
    signal acts as it would without this (a second Ctrl-C interrupts at once). Python delivers signals to the
    main thread only: elsewhere nothing is installed, with a warning. ``received`` names the signal, if any.
    """

    def __init__(self, on_signal: Callable[[str], None], signals: tuple[int, ...] = PREEMPTION_SIGNALS) -> None:
        self.on_signal = on_signal
        self.signals = signals
        self.received: str | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopOnSignals:
        if threading.current_thread() is not threading.main_thread():
            warnings.warn(
                "Training runs outside the main thread, where Python cannot handle signals: SIGTERM, SIGUSR1 and "
                "Ctrl-C will not checkpoint before stopping. Train in the main thread to get that.",
                RuntimeWarning,
                stacklevel=3,
            )
            return self
        for signum in self.signals:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self._restore()
        self.received = signal.Signals(signum).name
        self.on_signal(self.received)

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        self._previous.clear()

    def __exit__(self, *exc_info: object) -> None:
        self._restore()
