"""What an inference run is asked: one frozen settings type shared by ``run``, ``beam``, ``eval``
and ``compare``, the choice lists its options offer, and the checks that refuse a bad request.

``None`` stands for auto where the value is decided per image or per machine: ``sigma`` (the level
is estimated on each image) and ``ensemble`` (:func:`denoise.runtime.arithmetic`).
"""

from __future__ import annotations

import dataclasses
import math

from denoise import strength as strengths

# What --noise can say the images carry: auto (a photo's noise that spans more than a pixel sent to
# the photo model, photon noise stabilised where found), gaussian, photo, poisson, impulse,
# correlated or camera (see denoise.treatments).
NOISE_KINDS = ("auto", "gaussian", "photo", "poisson", "speckle", "impulse", "correlated", "camera")
MEASURING_KINDS = ("photo", "poisson", "speckle", "impulse", "correlated", "camera")  # kinds that read each image's level themselves
PRECISIONS = ("auto", "float32", "bfloat16")  # models.computing_in; auto: runtime.arithmetic
DEVICES = ("auto", "cpu", "gpu")
ENSEMBLE_SIZES = (1, 2, 4, 8)  # engine.ENSEMBLES
HIGHEST_LEVEL = 255.0  # a level beyond the value range is no level


class UsageError(ValueError):
    """A mistake in the command itself (exit status 2), as opposed to a bad file (exit status 1)."""


@dataclasses.dataclass(frozen=True)
class Inference:
    """How images are denoised, whatever reads and writes them."""

    model: str = "auto"  # a registry name, a .keras file, or auto: the shipped default for each image
    sigma: float | None = None  # the level told to models with a noise-level input, 0-255; None: estimated per image
    noise: str = "auto"  # one of NOISE_KINDS
    strength: float = strengths.DEFAULT  # how much to clean, relative to the default (denoise.strength)
    ensemble: int | None = None  # the mean over this many flips and turns of each tile; None: auto
    precision: str = "auto"  # one of PRECISIONS
    # Tiles of 2 megapixels, one a call (smaller images are batched to as many pixels): what bounds
    # memory. Less overlap to recompute than smaller ones: a 12 MP photo 1.09x its pixels, 1.15x at 1024.
    tile: int = 1440
    batch_size: int = 1
    device: str = "auto"  # one of DEVICES

    @property
    def batch_pixels(self) -> int:
        """What one model call may hold, and so what bounds memory: --batch-size full tiles."""
        return self.batch_size * self.tile * self.tile

    def check(self) -> Inference:
        """Refuse what no run can do (UsageError); return the settings."""
        if self.precision not in PRECISIONS:
            raise UsageError(f"--precision {self.precision}: choose {', '.join(PRECISIONS)}")
        if self.ensemble is not None and self.ensemble not in ENSEMBLE_SIZES:
            raise UsageError(f"--ensemble {self.ensemble}: choose auto or {', '.join(map(str, ENSEMBLE_SIZES))}")
        if self.device not in DEVICES:
            raise UsageError(f"--device {self.device}: choose {', '.join(DEVICES)}")
        check_noise(self.noise, self.sigma)
        check_sigma(self.sigma)
        check_strength(self.strength)
        return self


def check_noise(noise: str, sigma: float | None) -> None:
    """Refuse an unknown --noise, and a fixed --sigma with a kind that measures each image."""
    if noise not in NOISE_KINDS:
        raise UsageError(f"--noise {noise}: choose one of {', '.join(NOISE_KINDS)}")
    if noise in MEASURING_KINDS and sigma is not None:
        raise UsageError(f"--noise {noise} measures each image's noise: leave --sigma auto")


def check_sigma(sigma: float | None) -> None:
    if sigma is not None and not (math.isfinite(sigma) and 0 <= sigma <= HIGHEST_LEVEL):
        raise UsageError(f"--sigma {sigma:g}: choose auto or a level from 0 to {HIGHEST_LEVEL:g}")


def check_strength(strength: float) -> None:
    try:
        strengths.check(strength)
    except ValueError as error:
        raise UsageError(str(error)) from None


def parse_sigma(text: str) -> float | None:
    """``auto`` -> None, else the level as a float (ValueError for anything else)."""
    if text == "auto":
        return None
    level = float(text)
    if not (math.isfinite(level) and 0 <= level <= HIGHEST_LEVEL):
        raise ValueError(f"{text!r} is not 'auto' or a level from 0 to {HIGHEST_LEVEL:g}")
    return level
