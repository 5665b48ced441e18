"""TensorFlow's thread pools: how many threads a process gets, set before TensorFlow starts.

TensorFlow fixes its intra-op and inter-op pools when its runtime initialises (the first
operation), so the settings must be applied before any model is built. Several training
processes on one machine (``federated simulate``) share the cores instead of each taking
all of them: each gets ``max(1, cores // processes)`` intra-op threads and one inter-op
thread.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from enclaverec.errors import ConfigError, TrainingError


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS reports it)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class ThreadSettings:
    """TensorFlow's intra-op (within one kernel, e.g. a matmul) and inter-op (independent
    kernels side by side) thread counts."""

    intra_op: int
    inter_op: int

    def __post_init__(self) -> None:
        if self.intra_op < 1 or self.inter_op < 1:
            raise ConfigError(
                f"thread counts must be at least 1 (got intra-op {self.intra_op}, "
                f"inter-op {self.inter_op})"
            )

    @classmethod
    def for_processes(cls, processes: int, *, cores: int | None = None) -> ThreadSettings:
        """The share of one of ``processes`` TensorFlow processes on this machine.

        A single process uses every core for its kernels; one inter-op thread, because the
        DLRM's step is a chain of kernels with little to run side by side, and a second
        pool would only compete with the first for the same cores.
        """
        if processes < 1:
            raise ConfigError(f"processes must be at least 1, got {processes}")
        total = available_cores() if cores is None else cores
        return cls(intra_op=max(1, total // processes), inter_op=1)

    def to_dict(self) -> dict[str, int]:
        return {"intra_op": self.intra_op, "inter_op": self.inter_op}


def configure_threads(settings: ThreadSettings) -> ThreadSettings:
    """Apply ``settings`` to TensorFlow's thread pools and return them.

    Must run before the first TensorFlow operation of the process. Applying the settings
    already in effect again is allowed; asking for other ones after TensorFlow started
    raises TrainingError instead of silently keeping the old pools.
    """
    from enclaverec.model._tf import tf

    threading = tf.config.threading
    if (
        threading.get_intra_op_parallelism_threads() == settings.intra_op
        and threading.get_inter_op_parallelism_threads() == settings.inter_op
    ):
        return settings
    try:
        threading.set_intra_op_parallelism_threads(settings.intra_op)
        threading.set_inter_op_parallelism_threads(settings.inter_op)
    except RuntimeError as exc:
        raise TrainingError(
            f"TensorFlow already started with {_describe(current_threads())}; thread "
            "settings must be applied before the first TensorFlow operation"
        ) from exc
    return settings


def current_threads() -> tuple[int, int]:
    """TensorFlow's (intra-op, inter-op) thread counts; 0 means TensorFlow's own default
    (about one thread per core)."""
    from enclaverec.model._tf import tf

    threading = tf.config.threading
    return (
        threading.get_intra_op_parallelism_threads(),
        threading.get_inter_op_parallelism_threads(),
    )


def _describe(counts: tuple[int, int]) -> str:
    intra, inter = (str(count) if count else "default" for count in counts)
    return f"{intra} intra-op and {inter} inter-op threads"
