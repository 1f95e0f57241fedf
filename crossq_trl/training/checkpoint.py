"""Checkpoint files: atomic writes, a format tag and version, clear errors on bad files."""

from __future__ import annotations

import os
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT = "crossq_trl"
FORMAT_VERSION = 2  # 2: the critic's EnsembleLinear weights are stored [E, out, in], like nn.Linear's


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupt, foreign or from a newer version."""


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically: a temp file in the same folder, fsync, rename.

    An interrupted save never leaves a half-written file at ``path``; the previous
    checkpoint stays intact until the new one is complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as file:
            torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, **payload}, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device | None = None) -> dict[str, Any]:
    """Read a file written by :func:`save_checkpoint` (only load files you trust: it unpickles)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint file at {str(path)!r}.")
    try:
        data = torch.load(path, map_location=map_location, weights_only=False)
    except PermissionError:
        raise
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as err:
        # a truncated zip archive makes torch's reader raise OSError(EINVAL)
        raise CheckpointError(
            f"{str(path)!r} is not a readable crossq_trl checkpoint (truncated or corrupt file?): {err}"
        ) from err
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a crossq_trl checkpoint (foreign file).")
    if data.get("format_version", 0) < FORMAT_VERSION:
        raise CheckpointError(
            f"{str(path)!r} has format version {data.get('format_version')}, written by crossq_trl 0.1, whose "
            "critic stored its weights [E, in, out] (now [E, out, in]); load it with crossq_trl 0.1."
        )
    if data.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{str(path)!r} has format version {data['format_version']}, newer than this crossq_trl "
            f"(reads up to {FORMAT_VERSION}); upgrade crossq_trl."
        )
    return data


def rng_state() -> dict[str, Any]:
    """The state of every random generator a training run draws from."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
