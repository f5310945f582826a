"""Start TensorFlow the way a command-line tool needs it: quiet, and on the device asked for."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


@contextlib.contextmanager
def _stderr_muted():
    """Silence file descriptor 2: TensorFlow's C++ start-up logs bypass Python and its log levels."""
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def tensorflow(device: str = "auto"):
    """Import TensorFlow without its start-up chatter and apply ``device`` (auto, cpu or gpu).

    Returns the module. Raises ValueError for ``gpu`` when TensorFlow sees none.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with _stderr_muted():
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")  # the first device query logs CUDA probing
    tf.get_logger().setLevel("ERROR")
    if device == "cpu" and gpus:
        tf.config.set_visible_devices([], "GPU")
    elif device == "gpu" and not gpus:
        raise ValueError("--device gpu: TensorFlow sees no GPU (install the 'gpu' extra and a CUDA driver)")
    return tf


def native_bfloat16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool | None:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX); None where unknown."""
    try:
        flags = {flag for line in cpuinfo.read_text().splitlines() if line.startswith("flags")
                 for flag in line.split(":", 1)[1].split()}
    except OSError:
        return None
    return bool(flags & {"avx512_bf16", "amx_bf16"})
