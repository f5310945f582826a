"""The model side of inference: which model each image gets, loaded once, compiled once for any tile
and batch size, in the arithmetic and self-ensemble this machine runs best.
"""

from __future__ import annotations

import functools
import math
import threading
from typing import Callable

from denoise import timing
from denoise.settings import Inference, UsageError

# The geometric self-ensemble of each size, as (quarter turns, mirrored) pairs: the identity and
# its mirror image; the four turns; all eight. Set12 at sigma 25 (gray-large): 30.20 dB alone,
# 30.28 / 30.32 / 30.33 with 2 / 4 / 8; McMaster18 (color+gray): 31.74, 31.80 / 31.84 / 31.85.
# Of the pairs, the mirror gains most (a half turn 30.275, a turn and mirror 30.273); of the
# fours, the turns (four turns, half of them mirrored: 30.31).
ENSEMBLES = {
    1: [(0, False)],
    2: [(0, False), (0, True)],
    4: [(turns, False) for turns in range(4)],
    8: [(turns, mirrored) for turns in range(4) for mirrored in (False, True)],
}


def self_ensemble(function, images, sigmas, size: int = 8):
    """The mean of ``function`` over ``size`` flips and quarter turns of NHWC ``images`` (see
    ENSEMBLES), each turned back (a quarter turn swaps height and width; turning back restores
    them). Called eagerly with a traced ``function``: one pass at a time holds memory."""
    import tensorflow as tf

    total = 0.0
    for turns, mirrored in ENSEMBLES[size]:
        turned = tf.image.rot90(images, turns)
        turned = tf.reverse(turned, [2]) if mirrored else turned
        result = function(turned, sigmas)
        result = tf.reverse(result, [2]) if mirrored else result
        total += tf.image.rot90(result, (4 - turns) % 4)
    return total / size


def select_device(device: str) -> None:
    """Start TensorFlow on ``device`` (auto, cpu or gpu); a GPU asked for and absent is a UsageError."""
    from denoise import runtime

    try:
        with timing.stage("start-up"):
            runtime.tensorflow(device)
    except ValueError as error:
        raise UsageError(str(error)) from None


class Engine:
    """Holds the loaded models and their compiled inference functions. Thread-safe for
    :meth:`model_for` (decode threads ask which model an image gets)."""

    def __init__(self, inference: Inference, warn: Callable[[str], None]):
        self.inference = inference
        self.warn = warn
        self.models: dict[str, object] = {}
        self.functions: dict[str, Callable] = {}
        self.defaults: dict[tuple[int, str], str] = {}  # (channels, noise) -> the model --model auto picked
        self.warned: set[str] = set()
        self.lock = threading.Lock()

    def at(self, inference: Inference) -> Engine:
        """An engine for other settings of the same models (another --strength, say) that shares
        this one's loaded models and compiled functions."""
        other = Engine(inference, self.warn)
        other.models, other.functions, other.defaults, other.lock = self.models, self.functions, self.defaults, self.lock
        other.warned = self.warned
        return other

    def model_for(self, channels: int, noise: str | None = None):
        """The loaded model (registry.LoadedModel) for images of ``channels`` whose noise is
        treated as ``noise`` (default: as --noise says), loaded on first use."""
        with self.lock:
            return self._model_for(channels, noise or self.inference.noise)

    def loaded_for(self, channels: int, noise: str | None = None):
        """The model :meth:`model_for` gives if it is loaded already, else None (decode threads
        prepare an image only then: models load in the main thread, once TensorFlow has started)."""
        key = (channels, noise or self.inference.noise)
        name = self.inference.model if self.inference.model != "auto" else self.defaults.get(key)
        return self.models.get(name)

    def _model_for(self, channels: int, noise: str):
        from denoise import registry

        name = self.inference.model
        if name == "auto":
            key = (channels, noise)
            if key not in self.defaults:
                self.defaults[key] = registry.default_name(channels, noise=noise)
            name = self.defaults[key]
        if name not in self.models:
            with timing.stage("model load"):
                loaded = self.models[name] = registry.load(name)
            self._warn_about(loaded, registry.find(name) or {})
        return self.models[name]

    def _warn_about(self, loaded, entry: dict) -> None:
        """Say once what a model cannot do of what was asked."""
        sigma, strength = self.inference.sigma, self.inference.strength
        if not loaded.noise_level_input and strength > 1.0:
            self._warn_once("strength", f"denoise: warning: model {loaded.name} has no noise-level input to tell a "
                                        "higher level: --strength above 1 acts as 1")
        if not loaded.noise_level_input and sigma is not None:
            self._warn_once("sigma", f"denoise: warning: model {loaded.name} has no noise-level input; --sigma is ignored")
        elif loaded.noise_level_input and sigma is not None:
            trained = entry.get("noise", {})
            if trained.get("type") == "gaussian" and sigma > trained.get("high", math.inf):
                self.warn(f"denoise: warning: --sigma {sigma:g} is above the levels model {loaded.name} "
                          f"learned (up to {trained['high']:g}); expect a blurred result")

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self.warned:
            self.warned.add(key)
            self.warn(message)

    @functools.cached_property
    def machine(self) -> tuple[bool, bool | None]:
        """(a GPU is visible, the CPU computes bfloat16 natively); warns where an asked-for bfloat16
        would run slower than float32."""
        import tensorflow as tf

        from denoise import runtime

        gpu = bool(tf.config.get_visible_devices("GPU"))
        native = None if gpu else runtime.native_bfloat16()
        if self.inference.precision == "bfloat16" and native is False:
            self.warn("denoise: warning: this CPU has no native bfloat16 (AVX512-BF16 or AMX): "
                      "--precision bfloat16 runs slower than float32 here")
        return gpu, native

    def arithmetic(self, loaded=None) -> tuple[str, int]:
        """(precision, ensemble size) for ``loaded`` (a one-network model where None), with auto
        resolved for this machine (runtime.arithmetic)."""
        from denoise import runtime

        return runtime.arithmetic(self.inference.precision, self.inference.ensemble or 0, *self.machine,
                                  passes=1 if loaded is None else loaded.passes,
                                  preferred=None if loaded is None else loaded.ensemble)

    def function(self, loaded):
        """One ``tf.function`` per model, traced once for any batch and tile size: it takes NHWC
        tiles and an N x 1 array of levels (0-1 units)."""
        import tensorflow as tf

        if loaded.name not in self.functions:
            from denoise import models

            precision, ensemble = self.arithmetic(loaded)
            model = models.computing_in(loaded.model, precision)
            height = loaded.tile_size
            image_spec = tf.TensorSpec([None, height, height, loaded.channels], tf.float32)
            sigma_spec = tf.TensorSpec([None, 1], tf.float32)

            def call(images, sigmas):
                inputs = {"image": images, "sigma": sigmas} if loaded.noise_level_input else images
                return model(inputs, training=False)

            once = tf.function(call, input_signature=[image_spec, sigma_spec])
            # An ensemble calls the one traced function per member: tracing the model once per
            # member cost 0.6 s of a 12 MP photo's 16.
            self.functions[loaded.name] = once if ensemble == 1 else functools.partial(self_ensemble, once, size=ensemble)
        return self.functions[loaded.name]

    def tile_for(self, loaded) -> int:
        """--tile, or less where a tile's network passes would outgrow a batch's pixels (the
        memory bound): a mean of four evaluations gets tiles of half the area."""
        return min(self.inference.tile, math.isqrt(self.inference.batch_pixels // loaded.passes))

