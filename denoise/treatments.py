"""What is done to an image before the model and undone after it.

:func:`read` decides, per image, how its noise is treated and what level the model is told (the
policy behind ``--sigma`` and ``--noise``). :func:`prepare` turns the decision into a list of
:class:`Step` objects, each with its own ``forward`` (run before the model, in order) and
``backward`` (run after it, in reverse order), and returns the :class:`Image` the stream cuts
into tiles. A new treatment is one ``Step`` class here and one branch of :func:`read`.

    decoded -> Replicate -> KeepInput -> Bounds -> Mosaic | ClearImpulses | Stabilise -> Stretch
            -> Channels (per tile) -> model -> Channels -> blend -> ... backward ... -> output
"""

from __future__ import annotations

import dataclasses

import numpy as np

from denoise import calibrate, strength as strengths, tiles as tiling, timing
from denoise.noise import impulses, shuffle, variance
from denoise.noise.estimate import estimate_sigma
from denoise.noise.synthesis import effective_sigma

MARGIN = 32  # overlap between tiles is 2 * MARGIN: more than the networks' useful context

# A grey image given to a colour model is copied into R, G and B with the same noise in each, so
# its luminance carries noise sigma, where the independent noise the model learned puts sigma /
# sqrt(3) there. Told sigma * sqrt(3), it expects the luminance noise it gets (color on Set12 at
# sigma 25: 23.4 dB told sigma, 28.9 told this; gray gives 30.0).
GREY_IN_COLOUR = 3**0.5


# --------------------------------------------------------------------------------------------
# The policy: how an image's noise is treated, and what the model is told
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Reading:
    """What ``run`` reads on a whole image before the model (:func:`read`). Given to
    :func:`prepare` with a part of that image (``denoise compare``'s crops), the part is treated
    as the whole would be, not read again."""

    sigma: float | None  # the level the report gives (None: auto, and a model without a noise-level input)
    noise: str | None  # how the noise is treated: gaussian, photo, poisson, speckle, impulse, correlated or camera
    level: float | None  # what the model is told at --strength 1, 0-255 units of what it sees before the stretch
    stabilizer: tuple[float, float, float] | None  # the noise function of a signal-dependent image
    low: float  # the model sees (pixels - low) / span: see stretch()
    span: float
    bounds: tuple[float, float]  # the image's darkest and brightest values


def read(pixels: np.ndarray, inference, loaded) -> tuple[Reading, np.ndarray | None]:
    """The reading of ``pixels`` (grey pictures in R, G and B already made grey) for the model
    ``loaded`` under ``inference`` (settings.Inference), and what its tiles are cut from when not
    ``pixels`` (the treated image, computed once here)."""
    with timing.stage("noise reading"):
        spread = False
        if inference.sigma is None:  # what to tell the model for white or for camera noise (denoise.calibrate)
            sigma, spread = calibrate.read(pixels) if loaded.noise_level_input else (None, False)
        else:
            sigma = float(inference.sigma)
        kind, source, stabilizer, level = "gaussian", None, None, sigma
        if inference.sigma is None and sigma:
            kind, source, stabilizer, level = _treatment(pixels, sigma, inference.noise, spread)
    low, span = stretch(pixels if source is None else source)
    reading = Reading(
        sigma=level if kind == "camera" else sigma,  # the report gives the level the camera model is told
        noise=kind if sigma is not None else None, level=level, stabilizer=stabilizer, low=low, span=span,
        bounds=(float(pixels.min()), float(pixels.max())))
    return reading, source


def _treatment(pixels: np.ndarray, sigma: float, noise: str, spread: bool):
    """How to treat the noise of an image whose calibrated level is ``sigma`` (``spread``: its
    noise spans more than a pixel): ``(kind, the pixels the model sees when not these, the
    stabiliser, the level the model is told)``."""
    if noise == "photo" or noise == "auto" and spread:  # the photo model, told the calibrated level
        return "photo", None, None, sigma
    if noise == "camera":  # the camera models take it whole; colour is told the fitted peak's level
        peak = variance.camera_peak(pixels) if pixels.shape[-1] == 3 else None
        return "camera", None, None, sigma if peak is None else 255.0 * effective_sigma("camera", peak)
    if noise == "correlated":  # four half-size images, each with near-independent noise
        mosaic = Mosaic(pixels.shape[:2]).forward(pixels)
        return "correlated", mosaic, None, estimate_sigma(mosaic)
    if noise == "impulse":  # filled from their neighbours; what is left is Gaussian
        cleared = ClearImpulses().forward(pixels)
        return "impulse", cleared, None, estimate_sigma(cleared)
    stabilizer = _stabilizer(pixels, sigma, noise)
    if stabilizer is None:
        return "gaussian", None, None, sigma
    stabilized = Stabilise(stabilizer).forward(pixels)
    low, span = stretch(stabilized)  # the stabilised noise has a level of its own: measured
    kind = "speckle" if stabilizer[2] > 0 else "poisson"
    return kind, stabilized, stabilizer, estimate_sigma((stabilized - low) / span) * span


def _stabilizer(pixels: np.ndarray, sigma: float, noise: str) -> tuple[float, float, float] | None:
    """The noise function to stabilise an image's noise with (``sigma``: its estimated level),
    or None to take the noise as Gaussian. ``--noise poisson`` and ``speckle`` choose its shape."""
    if noise not in ("auto", "poisson", "speckle"):
        return None
    shape = {"auto": "auto", "poisson": "photon", "speckle": "multiplicative"}[noise]
    function = variance.noise_function(pixels, shape)
    if function is None or function[0] <= 0 and function[2] <= 0:
        return None
    if noise != "auto":
        return function
    return function if variance.is_signal_dependent(function, float(pixels.mean()), sigma / 255.0) else None


def stretch(pixels: np.ndarray) -> tuple[float, float]:
    """``(low, span)`` that map an image's darkest to brightest value onto 0-1 for the model.

    The models learned on photos that use the whole 0-1 range; they are not scale-invariant.
    A dark 16-bit scan using 0.4% of the range came out as noise; Set12 at sigma 25 squeezed into
    a tenth of it (sigma 2.5) is 1.2 dB better stretched, told sigma / span. Noisy photos mostly
    span 0-1 already and are unchanged."""
    low, high = float(pixels.min()), float(pixels.max())
    span = high - low
    return (low, span) if span > 1e-6 else (0.0, 1.0)


def grey_in_colour(pixels: np.ndarray) -> bool:
    """Whether a three-channel image holds the same grey picture in R, G and B, as grey scans and
    black-and-white photos saved as RGB do. As colour, its noise (the same in each channel)
    would reach the colour model as luminance noise it did not learn: Set12 at sigma 25 stored
    as RGB gave 27.1 dB that way, 30.2 as grey."""
    if pixels.ndim != 3 or pixels.shape[-1] != 3:
        return False
    sample = pixels[::7, ::7]  # a colour image is told apart on a sample
    if not (np.array_equal(sample[..., 0], sample[..., 1]) and np.array_equal(sample[..., 1], sample[..., 2])):
        return False
    return bool(np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(pixels[..., 1], pixels[..., 2]))


# --------------------------------------------------------------------------------------------
# The steps: each done before the model and undone after it
# --------------------------------------------------------------------------------------------


class Step:
    """One treatment: ``forward`` before the model, ``backward`` on its result, in reverse order."""

    def forward(self, pixels: np.ndarray) -> np.ndarray:
        return pixels

    def backward(self, result: np.ndarray) -> np.ndarray:
        return result


class Replicate(Step):
    """A grey picture in R, G and B: denoised as the grey image it is, written back in all three."""

    def forward(self, pixels):
        return pixels[..., :1]

    def backward(self, result):
        return np.repeat(result, 3, axis=-1)


@dataclasses.dataclass
class KeepInput(Step):
    """--strength below 1: keeps the input to blend some of it back (denoise.strength)."""

    strength: float
    original: np.ndarray | None = None

    def forward(self, pixels):
        self.original = pixels
        return pixels

    def backward(self, result):
        return strengths.blend(result, self.original, self.strength)


@dataclasses.dataclass
class Bounds(Step):
    """The output stays within the input's darkest to brightest value, as a full-range image's
    stays within 0-1."""

    bounds: tuple[float, float]

    def backward(self, result):
        return np.clip(result, *self.bounds, out=result)


@dataclasses.dataclass
class Mosaic(Step):
    """--noise correlated: the four half-size images of every other pixel, each with nearly
    independent noise, denoised instead of the image."""

    shape: tuple[int, int]  # the image's height and width

    def forward(self, pixels):
        return shuffle.to_mosaic(pixels)

    def backward(self, result):
        return shuffle.clear_pattern(shuffle.from_mosaic(result, *self.shape))


class ClearImpulses(Step):
    """--noise impulse: isolated black and white specks filled from their neighbours first."""

    def forward(self, pixels):
        return impulses.remove(pixels)[0]


@dataclasses.dataclass
class Stabilise(Step):
    """Noise that grows with brightness made even (variance.stabilize) and back."""

    function: tuple[float, float, float]  # the noise function (variance.noise_function)
    spread: float = 0.0  # the level of the stabilised noise (its units): the inverse of speckle's corrects its bias

    def forward(self, pixels):
        return variance.stabilize(pixels, self.function)

    def backward(self, result):
        return variance.unstabilize(result, self.function, self.spread)


@dataclasses.dataclass
class Stretch(Step):
    """The darkest to brightest value onto 0-1 for the model (see :func:`stretch`); the model's
    result clipped to 0-1 and mapped back."""

    low: float
    span: float

    @property
    def identity(self) -> bool:
        return self.span == 1.0 and self.low == 0.0

    def forward(self, pixels):
        return pixels if self.identity else (pixels - np.float32(self.low)) / np.float32(self.span)

    def backward(self, result):
        result = np.clip(result, 0.0, 1.0)
        if not self.identity:
            result = np.multiply(result, self.span, out=result)
            result += self.low
        return result


@dataclasses.dataclass
class Channels:
    """How a tile meets the model's channels: as it is, a grey tile copied into a colour model's
    R, G and B (the output's mean taken back), or a colour tile through a grey model channel by
    channel (``parts`` = 3 model tiles a tile)."""

    image: int  # the image's channels, 1 or 3
    model: int  # the model's

    @property
    def parts(self) -> int:
        return 3 if self.model == 1 and self.image == 3 else 1

    def split(self, tile: np.ndarray) -> list[np.ndarray]:
        if self.parts == 3:
            return [tile[..., channel : channel + 1] for channel in range(3)]
        return [np.repeat(tile, 3, axis=-1) if self.model == 3 and self.image == 1 else tile]

    def merge(self, outputs: list[np.ndarray]) -> np.ndarray:
        if self.parts == 3:
            return np.stack([output[..., 0] for output in outputs], axis=-1)
        output = outputs[0]
        return output.mean(axis=-1, keepdims=True) if self.model == 3 and self.image == 1 else output


# --------------------------------------------------------------------------------------------
# An image in flight between decode and write
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Image:
    """An image prepared for the model: the pixels its tiles are cut from, the level the model is
    told, its grid and blend, and the steps to undo on the blended result."""

    job: object  # plan.Job
    decoded: object  # io.Decoded: what the output is encoded like
    model: object  # registry.LoadedModel
    pixels: np.ndarray | None  # what the tiles are cut from (freed once they are)
    level: float  # 0-255 units of what the model sees, fed to models with a noise-level input
    channels: Channels
    steps: list[Step]
    grid: tiling.Grid
    blender: tiling.Blender
    parts: dict = dataclasses.field(default_factory=dict)  # tile index -> model outputs so far
    submitted: bool = False

    def tiles(self):
        """The model-ready tiles: ``((tile index, part), array with the model's channels)``."""
        pixels, self.pixels = self.pixels, None  # cut once; the blend does not need them
        for index, tile in enumerate(tiling.extract(pixels, self.grid)):
            for part, model_tile in enumerate(self.channels.split(tile)):
                yield (index, part), model_tile

    def add(self, key: tuple[int, int], output: np.ndarray) -> None:
        """One model output; a tile whose parts are all in goes to the blend."""
        index, part = key
        outputs = self.parts.setdefault(index, [None] * self.channels.parts)
        outputs[part] = output
        if all(each is not None for each in outputs):
            with timing.stage("blend"):
                self.blender.add(index, self.channels.merge(self.parts.pop(index)))

    @property
    def done(self) -> bool:
        return self.blender.done

    def result(self) -> np.ndarray:
        """The output pixels once every tile is done: the blend with every step undone."""
        result = self.blender.result()
        for step in reversed(self.steps):
            result = step.backward(result)
        return result


def prepare(job, decoded, engine, reading: Reading | None = None, loaded_only: bool = False) -> Image | None:
    """``decoded`` (io.Decoded) ready for ``engine``'s model: read (unless ``reading``, from
    :func:`read` of the whole image ``decoded`` is a part of), treated, tiled. Sets the job's
    sigma, noise, model and ensemble, as the report gives them. With ``loaded_only``, None when
    the image's model is not loaded yet (decode threads leave the loading to the main thread)."""
    pixels = decoded.pixels
    steps: list[Step] = []
    if grey_in_colour(pixels):
        steps.append(Replicate())
        pixels = steps[-1].forward(pixels)
    channels = pixels.shape[-1]
    if loaded_only and engine.loaded_for(channels) is None:
        return None
    loaded = engine.model_for(channels)
    inference = engine.inference
    if reading is None:
        reading, source = read(pixels, inference, loaded)
    else:
        source = None
    if reading.noise == "photo":  # a model of its own where one is shipped (engine.model_for)
        if loaded_only and engine.loaded_for(channels, "photo") is None:
            return None
        loaded = engine.model_for(channels, "photo")
    if inference.strength < 1.0:
        steps.append(KeepInput(inference.strength))
        steps[-1].forward(pixels)
    steps.append(Bounds(reading.bounds))
    stabilise = lambda: Stabilise(reading.stabilizer, (reading.level or 0.0) / 255.0)  # noqa: E731
    treatment = {"correlated": lambda: Mosaic(pixels.shape[:2]), "impulse": ClearImpulses,
                 "poisson": stabilise, "speckle": stabilise}.get(reading.noise)
    if treatment is not None:
        steps.append(treatment())
        pixels = source if source is not None else steps[-1].forward(pixels)
    steps.append(Stretch(reading.low, reading.span))
    pixels = steps[-1].forward(pixels)
    job.sigma, job.noise, job.model, job.ensemble = reading.sigma, reading.noise, loaded.name, engine.arithmetic(loaded)[1]
    level = (reading.level or 0.0) / reading.span * (GREY_IN_COLOUR if loaded.channels == 3 and channels == 1 else 1.0)
    if inference.strength > 1.0:  # --strength: told more; at 1 nothing changes
        level *= strengths.level_factor(inference.strength)
    fixed = loaded.tile_size is not None
    grid = tiling.grid(pixels.shape[0], pixels.shape[1], loaded.tile_size if fixed else engine.tile_for(loaded),
                       loaded.multiple, MARGIN, fixed)
    return Image(job, decoded, loaded, pixels, level, Channels(channels, loaded.channels), steps, grid,
                 tiling.Blender(grid, channels))


def reading_of(decoded, engine) -> Reading:
    """What ``run`` reads on the whole of ``decoded`` (io.Decoded) before the model (see :class:`Reading`)."""
    pixels = decoded.pixels[..., :1] if grey_in_colour(decoded.pixels) else decoded.pixels
    return read(pixels, engine.inference, engine.model_for(pixels.shape[-1]))[0]
