"""``denoise adapt``: fine-tune a model on a folder of noisy images alone, with no clean versions.

The loss is Neighbor2Neighbor's (Huang et al., CVPR 2021): from each 2x2 cell of a noisy crop two
different pixels are picked at random, one into a half-size input, the other into a half-size
target. Their noise is independent and their content nearly the same, so a network trained to
map one onto the other learns to remove the noise. Noise that spans several pixels is first split
into the four half-size phases of every other pixel (``noise/shuffle.py``), in which it is close to
independent again; the adapted model then carries that split inside itself (``models.on_phases``).

Each image is prepared exactly as ``denoise run`` prepares it (``treatments.prepare``: stabilised,
stretched, told the level read on the whole image), and the model learns on those pixels with that
level; so ``run --model OUT`` tells it what it was told here.

A run keeps its state in ``OUT.run/`` (``checkpoint.keras`` with the optimizer, ``state.json``
with the validation curve); the best model by the self-supervised validation loss on held-back
crops goes to ``OUT`` (every few validations, at the end and on Ctrl-C), with its entry in the ``manifest.json`` beside it.
When adapting never beats the starting model on that loss, the starting model is written.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np

CORRELATION_CHOICES = ("auto", "yes", "no")
# Noise read on the four phases of every other pixel, over noise read on the image: white and
# Poisson noise give about 1.01, clean photos up to 1.5 (their detail), demosaiced camera noise
# 2-3 and noise blurred over two pixels 2.4 or more.
CORRELATED_RATIO = 1.6
# What is held in memory: an even sample of at most this many images, and of each its centre up to
# this side. A few minutes of training see about a thousand batches of 8 crops: more images would
# not be seen, and all of a large folder would not fit in memory.
MAX_IMAGES = 100
MAX_SIDE = 1024
# The checkpoint (3x the model, with the optimizer) and the best model are written every few
# rounds, at the end and on Ctrl-C: writing them every round took a third of the time on CC15.
CHECKPOINT_ROUNDS = 4
# The held-back pairs are half-size images, and a loss on them overstates small gains: on white
# noise at sigma 25, a loss 0.08 dB below the starting model's came with a PSNR 0.29 dB below it
# (Set12), where noise the model did not know gave 0.4 dB (+1.1 dB PSNR) and more. The adapted
# model is written only when its loss is this far below the starting model's.
MARGIN_DB = 0.2


@dataclasses.dataclass(frozen=True)
class AdaptOptions:
    """What ``denoise adapt`` is asked; saved in the run folder and the manifest entry."""

    inputs: tuple[str, ...]
    out: str
    init_from: str = "auto"  # a registry name or .keras file; auto: the model run picks for the first image
    noise: str = "auto"  # the --noise that run will be given (settings.NOISE_KINDS): the images are prepared so
    minutes: float = 5.0  # training time, in total across resumes: a few minutes on a CPU
    correlated: str = "auto"  # one of CORRELATION_CHOICES: split into phases first
    # Crops of the prepared image (or phase) drawn for training; the pairs are half that. 128 gives
    # pairs of 64, a multiple of the shipped U-Nets' 16 with room for their context.
    crop: int = 128
    batch_size: int = 8  # small: a step is cheap on a CPU, and the noise of one folder is one kind
    # Low: a fresh Adam at the rates of training from scratch (1e-3) knocks a trained model back
    # before it learns the new noise.
    learning_rate: float = 5e-5
    warmup: int = 50  # steps of linear warm-up from 0, so Adam's first estimates take no large step
    round_steps: int = 25  # steps between validations (an epoch of Keras fit)
    # Rounds without a better validation loss before stopping (0: only --minutes stops). The loss on 32
    # held-back crops is noisy and falls slowly at this rate: on speckle, 8 rounds stopped adapting at
    # 1,675 steps, 0.19 dB below the start; it went on falling to 0.22 dB at 4,250 steps.
    patience: int = 30
    validation_crops: int = 32  # held-back crops, at most one per image or phase
    max_steps: int | None = None  # a cap on the steps, in total; None: only --minutes and patience stop
    seed: int = 0
    recursive: bool = True
    resume: bool = False
    command: str = ""


def check(options: AdaptOptions) -> None:
    """Raise ValueError for options that cannot work, before any image is read."""
    if not str(options.out).endswith(".keras"):
        raise ValueError(f"--out {options.out}: the model file name must end in .keras")
    from denoise.settings import NOISE_KINDS

    if options.noise not in NOISE_KINDS:
        raise ValueError(f"--noise {options.noise}: choose one of {', '.join(NOISE_KINDS)}")
    if options.correlated not in CORRELATION_CHOICES:
        raise ValueError(f"--correlated {options.correlated}: choose {', '.join(CORRELATION_CHOICES)}")
    if not (options.minutes > 0 and math.isfinite(options.minutes)):
        raise ValueError("--minutes must be above 0")
    if options.crop < 8 or options.crop % 2:
        raise ValueError("--crop must be an even number of pixels, 8 or more")
    if options.batch_size < 1 or options.round_steps < 1 or options.validation_crops < 1:
        raise ValueError("the batch size, steps between validations and validation crops must be at least 1")
    if options.learning_rate <= 0 or options.warmup < 0 or options.patience < 0:
        raise ValueError("--lr must be above 0, --warmup and --patience 0 or more")
    if options.max_steps is not None and options.max_steps < 1:
        raise ValueError("--max-steps must be at least 1")


def run_dir(out: str) -> Path:
    return Path(f"{out}.run")


# --------------------------------------------------------------------------------------------
# The images, as the model sees them in `run`
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Source:
    """One image (or one of its channels or phases) as the network sees it, and the level it is told."""

    pixels: np.ndarray  # H x W x the network's channels, float32
    sigma: float  # 0-1 units, as the model's noise-level input takes it
    estimate: np.ndarray | None = None  # the starting model's output on it (see :func:`estimate`)

    def stacked(self) -> np.ndarray:
        """The pixels and the estimate side by side on the channel axis, to be cut alike."""
        return np.concatenate([self.pixels, self.estimate if self.estimate is not None else self.pixels], axis=-1)


def estimate(sources: list[Source], model, with_sigma: bool, multiple: int) -> None:
    """Give each source the starting model's output on it, padded by reflection to the model's
    size multiple: what corrects the targets of the pairs (see :func:`corrected_pair`)."""
    for source in sources:
        height, width = source.pixels.shape[:2]
        padded = np.pad(source.pixels, ((0, -height % multiple), (0, -width % multiple), (0, 0)), mode="reflect")
        inputs = {"image": padded[None], "sigma": np.float32([[source.sigma]])} if with_sigma else padded[None]
        source.estimate = np.asarray(model(inputs, training=False))[0, :height, :width].astype(np.float32)


def prepared_images(options: AdaptOptions, say: Callable[[str], None]) -> tuple[list, list[str], object]:
    """Each readable input (an even sample of MAX_IMAGES at most) as ``run`` prepares it for the
    model to adapt: ``[(pixels, level 0-255, treatments.Channels)]``, the files used and the
    engine.Engine of that model. A file that cannot be read is one line on ``say``, as in ``run``."""
    from denoise import io, treatments
    from denoise.plan import Job

    def failed(path, reason):
        say(f"denoise: {io.shown(path)}: {reason}")

    paths = [path for path, _ in io.iter_inputs([Path(each) for each in options.inputs], options.recursive,
                                                 on_error=failed)]
    if len(paths) > MAX_IMAGES:
        say(f"adapting on {MAX_IMAGES} of the {len(paths)} images, spread over them")
        paths = [paths[int(index * len(paths) / MAX_IMAGES)] for index in range(MAX_IMAGES)]
    images, used, engine = [], [], None
    for index, path in enumerate(paths):
        try:
            decoded = io.read_image(path)
        except io.ImageError as error:
            failed(path, str(error))
            continue
        engine = engine or _engine(options.init_from, options.noise, decoded.pixels, say)
        image = treatments.prepare(Job(index, path, path), decoded, engine)
        images.append((_centre(image.pixels), image.level, image.channels))
        used.append(str(path))
    return images, used, engine


def _engine(init_from: str, noise: str, pixels: np.ndarray, say):
    """The engine of the model to adapt, under ``run --noise noise``: ``init_from``, or for auto the
    one ``run`` picks for an image like ``pixels`` (the photo model where its noise spans more than
    a pixel; every image then goes through that one model, as ``run --model`` will)."""
    from denoise import calibrate, registry, treatments
    from denoise.engine import Engine
    from denoise.settings import Inference

    if init_from == "auto":
        channels = 1 if treatments.grey_in_colour(pixels) else pixels.shape[-1]
        kind = "photo" if noise == "auto" and calibrate.read(pixels if channels == 3 else pixels[..., :1])[1] else noise
        init_from = registry.default_name(channels, noise=kind)
    return Engine(Inference(model=init_from, noise=noise), say)


def _centre(pixels: np.ndarray) -> np.ndarray:
    """At most MAX_SIDE x MAX_SIDE of a prepared image, from its centre, at even offsets (so the
    phases of every other pixel stay those ``run`` takes)."""
    height, width = pixels.shape[:2]
    top, left = max(0, (height - MAX_SIDE) // 4 * 2), max(0, (width - MAX_SIDE) // 4 * 2)
    return pixels[top : top + MAX_SIDE, left : left + MAX_SIDE]


def is_correlated(images: list) -> bool:
    """Whether the noise spans more than a pixel: read on the phases, it is well above what it
    reads on the image (see CORRELATED_RATIO), in most images."""
    from denoise.noise import shuffle
    from denoise.noise.estimate import estimate_sigma

    ratios = []
    for pixels, _, _ in images:
        whole = estimate_sigma(pixels)
        ratios.append(estimate_sigma(shuffle.to_mosaic(pixels)) / whole if whole > 0 else 1.0)
    return bool(ratios) and float(np.median(ratios)) > CORRELATED_RATIO


def sources(images: list, correlated: bool) -> list[Source]:
    """What the network learns on: each image with the network's channels (a colour image split
    into its channels for a grey network, a grey one copied into R, G and B for a colour one), in
    its four phases when ``correlated``, told the image's level."""
    result = []
    for pixels, level, channels in images:
        for part in channels.split(pixels):
            part = np.ascontiguousarray(part, dtype=np.float32)
            if correlated:
                height, width = part.shape[0] // 2 * 2, part.shape[1] // 2 * 2
                parts = [part[row:height:2, column:width:2] for row in (0, 1) for column in (0, 1)]
            else:
                parts = [part]
            result += [Source(np.ascontiguousarray(each), level / 255.0) for each in parts]
    return result


# --------------------------------------------------------------------------------------------
# Neighbor2Neighbor pairs, training and held-back crops
# --------------------------------------------------------------------------------------------


def pair(crop: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Neighbor2Neighbor's two half-size sub-images of an (H, W, C) crop (H and W even): from each
    2x2 cell one pixel into the first, a different one of the same cell into the second."""
    height, width = crop.shape[0] // 2, crop.shape[1] // 2
    cells = crop[: 2 * height, : 2 * width].reshape(height, 2, width, 2, -1).transpose(0, 2, 1, 3, 4)
    cells = cells.reshape(height, width, 4, -1)
    first = rng.integers(0, 4, (height, width))
    second = (first + rng.integers(1, 4, (height, width))) % 4  # never the same pixel
    rows, columns = np.mgrid[0:height, 0:width]
    return cells[rows, columns, first], cells[rows, columns, second]


def corrected_pair(stacked: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The pair of a crop of :meth:`Source.stacked`: the noisy first sub-image, and as the target
    the noisy second one moved by the estimate's difference between the two sub-images.

    The two pixels of a cell differ in content as well as in noise; a network trained to predict
    one from the other learns to blur a little (white noise at sigma 25: 0.4 dB below the shipped
    model, measured on Set12 with plain pairs). The starting model's estimate of that difference,
    added to the target, leaves the target with the content of the first sub-image and the noise
    of the second: unbiased as Noise2Noise, as Neighbor2Neighbor's regulariser aims to be."""
    channels = stacked.shape[-1] // 2
    first, second = pair(stacked, rng)
    return first[..., :channels], second[..., :channels] + first[..., channels:] - second[..., channels:]


@dataclasses.dataclass
class Crops:
    """Where training crops come from and the held-back validation crops: each source with room
    for two crops gives its bottom-right corner crop to validation (up to a number), and training
    crops never overlap it."""

    sources: list[Source]
    size: int
    held: dict[int, tuple[int, int]]  # source index -> the held-back crop's top-left corner

    @classmethod
    def plan(cls, sources: list[Source], size: int, count: int, multiple: int) -> Crops:
        smallest = min(min(source.pixels.shape[:2]) for source in sources)
        size = min(size, smallest // (2 * multiple) * 2 * multiple)  # pairs must be multiples of the network's
        if size < 2 * multiple:
            raise ValueError(f"the images are too small to adapt on: the network needs at least "
                             f"{2 * multiple}x{2 * multiple} pixels (after a split into phases)")

        def roomy(size):  # the sources with room for a held-back crop beside a training one
            return [index for index, source in enumerate(sources) if max(source.pixels.shape[:2]) >= 2 * size]

        while size > 2 * multiple and not roomy(size):  # small images: smaller crops
            size -= 2 * multiple
        roomy = roomy(size)
        step = max(1, len(roomy) / count)
        chosen = [roomy[int(position * step)] for position in range(min(count, len(roomy)))]
        held = {index: (sources[index].pixels.shape[0] - size, sources[index].pixels.shape[1] - size)
                for index in chosen}
        return cls(sources, size, held)

    def validation(self, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The held-back crops as fixed pairs: ``(inputs, sigmas, targets)``."""
        rng = np.random.default_rng([seed, 1])
        inputs, targets, sigmas = [], [], []
        for index, (top, left) in self.held.items():
            source = self.sources[index]
            first, second = corrected_pair(source.stacked()[top : top + self.size, left : left + self.size], rng)
            inputs.append(first)
            targets.append(second)
            sigmas.append([source.sigma])
        return np.stack(inputs), np.asarray(sigmas, np.float32), np.stack(targets)

    def training(self, rng: np.random.Generator) -> tuple[np.ndarray, float, np.ndarray]:
        """One random training pair: a crop anywhere but over a held-back one, turned and mirrored."""
        weights = np.array([source.pixels.shape[0] * source.pixels.shape[1] for source in self.sources], float)
        while True:
            index = int(rng.choice(len(self.sources), p=weights / weights.sum()))
            source = self.sources[index]
            height, width = source.pixels.shape[:2]
            top = int(rng.integers(0, height - self.size + 1))
            left = int(rng.integers(0, width - self.size + 1))
            corner = self.held.get(index)
            if corner is None or top + self.size <= corner[0] or left + self.size <= corner[1]:
                break
        crop = np.rot90(source.stacked()[top : top + self.size, left : left + self.size], int(rng.integers(4)))
        crop = crop[:, ::-1] if rng.integers(2) else crop
        first, second = corrected_pair(np.ascontiguousarray(crop), rng)
        return first, source.sigma, second


def dataset(crops: Crops, options: AdaptOptions, with_sigma: bool, start_step: int):
    """Endless batches of training pairs for Keras fit; a resumed run draws new ones."""
    import tensorflow as tf

    half = crops.size // 2
    channels = crops.sources[0].pixels.shape[-1]

    def pairs():
        rng = np.random.default_rng([options.seed, start_step])
        while True:
            first, sigma, second = crops.training(rng)
            yield first, np.float32([sigma]), second

    signature = (tf.TensorSpec((half, half, channels), tf.float32), tf.TensorSpec((1,), tf.float32),
                 tf.TensorSpec((half, half, channels), tf.float32))
    data = tf.data.Dataset.from_generator(pairs, output_signature=signature)
    data = data.map(lambda first, sigma, second: (({"image": first, "sigma": sigma} if with_sigma else first), second))
    return data.batch(options.batch_size).prefetch(2)


def validation_loss(model, held: tuple, with_sigma: bool, batch: int = 8) -> float:
    """The mean squared error from the held-back inputs to their targets: the noise's variance plus
    what the model gets wrong, so lower is better."""
    inputs, sigmas, targets = held
    total = 0.0
    for start in range(0, len(inputs), batch):
        chunk = slice(start, start + batch)
        feed = {"image": inputs[chunk], "sigma": sigmas[chunk]} if with_sigma else inputs[chunk]
        output = np.asarray(model(feed, training=False))
        total += float(np.sum(np.mean(np.square(output - targets[chunk]), axis=(1, 2, 3))))
    return total / len(inputs)


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


def adapt(options: AdaptOptions, say: Callable[[str], None] = print, callbacks=(), progress: bool = False) -> dict:
    """Adapt as ``options`` say; return the summary. Ctrl-C keeps the best model in ``out``,
    saves the checkpoint and re-raises KeyboardInterrupt; ``options.resume`` continues it."""
    import keras

    check(options)
    folder = run_dir(options.out)
    state = {"step": 0, "round": 0, "seconds": 0.0, "best_loss": None, "start_loss": None, "adapted": False,
             "history": []}
    resuming = options.resume and (folder / "state.json").exists() and (folder / "checkpoint.keras").exists()
    if resuming:
        saved = json.loads((folder / "state.json").read_text())
        state.update(saved["state"])
        options = dataclasses.replace(options, init_from=saved["options"]["init_from"],
                                      correlated=saved["options"]["correlated"], noise=saved["options"]["noise"])
    images, used, engine = prepared_images(options, say)
    if not images:
        raise ValueError("no readable images to adapt on")
    options = dataclasses.replace(options, init_from=engine.inference.model)
    start = engine.model_for(images[0][2].image)
    if start.tile_size is not None:
        raise ValueError(f"{start.name} takes only {start.tile_size}x{start.tile_size} images: adapt a model "
                         "that takes any size")
    correlated = is_correlated(images) if options.correlated == "auto" else options.correlated == "yes"
    if correlated and options.correlated == "auto" and made_for_spread_noise(start.name) and not resuming:
        return _keep_start(options, start, images, used, say)
    options = dataclasses.replace(options, correlated="yes" if correlated else "no")
    with_sigma = start.noise_level_input
    crops = Crops.plan(sources(images, correlated), options.crop, options.validation_crops, start.multiple)
    if not crops.held:
        raise ValueError("the images are too small to hold back validation crops: give larger or more images")
    estimate(crops.sources, start.model, with_sigma, start.multiple)
    held = crops.validation(options.seed)
    told = [source.sigma * 255.0 for source in crops.sources]
    state["levels"] = [round(min(told), 2), round(max(told), 2)]
    state["parameters"] = int(start.model.count_params())
    state["channels"] = start.channels
    say(f"adapting {start.name} on {len(used)} images ({len(crops.sources)} {'phases' if correlated else 'images'}"
        f"{' of noise spanning several pixels' if correlated else ''}), {len(held[0])} held-back crops of "
        f"{crops.size // 2}x{crops.size // 2}")

    keras.utils.set_random_seed(options.seed)
    checkpoint = folder / "checkpoint.keras"
    if resuming:
        model = keras.saving.load_model(checkpoint)
        say(f"resuming {checkpoint} at step {state['step']}")
    else:
        model = keras.Model.from_config(start.model.get_config())
        model.set_weights(start.model.get_weights())
        schedule = keras.optimizers.schedules.CosineDecay(
            0.0, 10**9, alpha=1.0, warmup_target=options.learning_rate, warmup_steps=max(options.warmup, 1))
        model.compile(optimizer=keras.optimizers.Adam(schedule), loss="mean_squared_error")
        state["start_loss"] = state["best_loss"] = validation_loss(model, held, with_sigma)
        state["history"].append({"step": 0, "seconds": 0.0, "val_loss": state["start_loss"]})
        folder.mkdir(parents=True, exist_ok=True)
        _write_model(model, None, start, options, state, used, correlated)
    say(f"validation loss {state['start_loss']:.6g} before adapting")

    limit = options.minutes * 60.0
    budget = _rounds_left(options, state)
    if budget > 0 and state["seconds"] < limit:
        tracker = _tracker(options, state, folder, held, with_sigma, limit, say, progress,
                           lambda weights: _write_model(model, weights, start, options, state, used, correlated))
        train_set = dataset(crops, options, with_sigma, state["step"])
        try:
            model.fit(train_set, epochs=state["round"] + budget, initial_epoch=state["round"],
                      steps_per_epoch=options.round_steps, callbacks=[tracker, *callbacks], verbose=0,
                      shuffle=False)  # the pairs are random already
        except KeyboardInterrupt:
            tracker.close()
            _save_checkpoint(model, folder)
            _save_state(folder, options, state)
            say(f"interrupted: the best model so far is in {options.out}; rerun with --resume to continue")
            raise
        tracker.close()
        _save_checkpoint(model, folder)
        _save_state(folder, options, state)
    kept = "the adapted model" if state["adapted"] else f"{start.name} unchanged (adapting did not beat it by {MARGIN_DB:g} dB)"
    say(f"wrote {options.out}: {kept}; validation loss {state['best_loss']:.6g} (from {state['start_loss']:.6g})")
    return _summary(options, state, used, start, correlated)


def made_for_spread_noise(name: str) -> bool:
    """Whether a registry model learned noise that spans several pixels on whole images (the photo
    model ``run`` sends such photos to): no model adapted on the phases does as well on them."""
    from denoise import registry

    entry = registry.find(name) or {}
    return entry.get("noise", {}).get("type") == "photo"


def _keep_start(options: AdaptOptions, start, images: list, used: list[str], say) -> dict:
    """Write the starting model unchanged, with its entry: for photos whose noise spans several
    pixels when it was made for them: a model adapted on the phases does worse on them (CC15:
    docs/adapt.md)."""
    levels = [image[1] for image in images]
    state = {"step": 0, "seconds": 0.0, "best_loss": None, "start_loss": None, "adapted": False, "history": [],
             "levels": [round(min(levels), 2), round(max(levels), 2)],
             "parameters": int(start.model.count_params()), "channels": start.channels}
    options = dataclasses.replace(options, correlated="no")
    say(f"{start.name} learned noise that spans several pixels, as these images have, on whole images; "
        "adapting on the phases of every other pixel, the only way this loss can learn such noise, does "
        f"worse (docs/adapt.md): writing {start.name} unchanged (--correlated yes adapts on the phases anyway)")
    _write_model(None, None, start, options, state, used, False)
    say(f"wrote {options.out}: {start.name} unchanged")
    return _summary(options, state, used, start, False)


def _beats(start: float, loss: float) -> bool:
    """Whether a validation loss beats the starting model's by MARGIN_DB."""
    return loss > 0 and 10 * math.log10(start / loss) >= MARGIN_DB


def _rounds_left(options: AdaptOptions, state: dict) -> int:
    if options.max_steps is None:
        return 10**6  # --minutes or patience stops it
    return max(0, -(-(options.max_steps - state["step"]) // options.round_steps))


def _tracker(*args, **kwargs):
    """A Keras callback: after each round, validates, keeps the best model, saves the checkpoint
    and state, and stops at the time limit, the step cap or when validation stops improving."""
    import keras

    class Tracker(keras.callbacks.Callback):
        def __init__(self, options, state, folder, held, with_sigma, limit, say, progress, keep):
            super().__init__()
            self.options, self.state, self.folder, self.held = options, state, folder, held
            self.with_sigma, self.limit, self.say, self.keep = with_sigma, limit, say, keep
            self.began = time.time()
            self.stale = 0
            self.best = None  # the best weights not yet written to out
            self.bar = None
            if progress:
                from tqdm import tqdm

                total = None if options.max_steps is None else options.max_steps
                self.bar = tqdm(total=total, initial=state["step"], unit="step", leave=False)

        def on_train_batch_end(self, batch, logs=None):
            self.state["step"] += 1
            if self.bar is not None:
                self.bar.update(1)

        def on_epoch_end(self, epoch, logs=None):
            state, options = self.state, self.options
            state["round"] = epoch + 1
            loss = validation_loss(self.model, self.held, self.with_sigma)
            state["history"].append({"step": state["step"], "seconds": round(state["seconds"] + time.time() - self.began, 1),
                                     "train_loss": float((logs or {}).get("loss", math.nan)), "val_loss": loss})
            if loss < state["best_loss"]:
                state["best_loss"], self.stale = loss, 0
                state["adapted"] = _beats(state["start_loss"], loss)
                self.best = self.model.get_weights() if state["adapted"] else None
            else:
                self.stale += 1
            if state["round"] % CHECKPOINT_ROUNDS == 0:
                _save_checkpoint(self.model, self.folder)
                self.flush()
            state["seconds"] += time.time() - self.began  # training, validation and saving: what a user waits
            self.began = time.time()
            _save_state(self.folder, options, state)
            gain = 10 * math.log10(state["start_loss"] / state["best_loss"]) if state["best_loss"] > 0 else 0.0
            if self.bar is not None:
                self.bar.set_postfix_str(f"val {loss:.5g} (best {state['best_loss']:.5g}, {gain:+.2f} dB)")
            else:
                self.say(f"step {state['step']}: validation loss {loss:.6g} (best {state['best_loss']:.6g}); "
                         f"{state['seconds'] / 60:.1f} of {self.limit / 60:g} minutes")
            if state["seconds"] >= self.limit:
                self.model.stop_training = True
            if options.patience and self.stale >= options.patience:
                self.say(f"validation stopped improving for {self.stale} rounds: stopping")
                self.model.stop_training = True
            if options.max_steps is not None and state["step"] >= options.max_steps:
                self.model.stop_training = True

        def flush(self):
            """The best weights into out, if they are not there yet."""
            if self.best is not None:
                self.keep(self.best)
                self.best = None

        def close(self):
            self.flush()
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    return Tracker(*args, **kwargs)


def _write_model(model, weights, start, options: AdaptOptions, state: dict, used: list[str], correlated: bool) -> None:
    """``model`` with ``weights`` into ``out`` (inside :func:`models.on_phases` when ``correlated``),
    and its entry into the manifest beside it; the starting model itself, as it is, while adapting
    has not beaten it."""
    import keras

    from denoise import models, train

    if not state["adapted"]:
        network = start.model  # as run has it, on the whole image
    else:
        network = keras.Model.from_config(model.get_config())
        network.set_weights(weights)
        network = models.on_phases(network) if correlated else network
    train._save_atomic(network, Path(options.out))
    record(options, _summary(options, state, used, start, correlated), start.ensemble)


def record(options: AdaptOptions, summary: dict, start_ensemble: int | None = None) -> dict:
    """Add or replace the entry of the adapted model in the ``manifest.json`` beside it."""
    from denoise import registry

    out = Path(options.out)
    manifest = registry.load_manifest(out.parent)
    entry = {
        "name": out.stem,
        "file": out.name,
        "sha256": registry.sha256_of(out),
        "size_bytes": out.stat().st_size,
        "architecture": "adapted",
        "init_from": summary["init_from"],
        "channels": summary["channels"],
        "parameters": summary["parameters"],
        # The images' own noise; low and high are the levels the model was told on them.
        "noise": {"type": "adapted", "low": summary["levels"][0], "high": summary["levels"][1],
                  "correlated": summary["correlated"], "run_noise": options.noise},
        "data": " + ".join(options.inputs),
        "files": summary["data"],
        "command": options.command,
        "adaptation": {key: summary[key] for key in ("loss", "adapted", "steps", "seconds", "start_val_loss",
                                                     "best_val_loss", "validation")},
    }
    if not summary["adapted"] and start_ensemble is not None:
        entry["ensemble"] = start_ensemble  # the starting model, written as it is, runs as it ran
    manifest["models"] = [model for model in manifest["models"] if model.get("name") != entry["name"]] + [entry]
    registry.write_manifest(manifest, out.parent)
    return entry


def _summary(options: AdaptOptions, state: dict, used: list[str], start, correlated: bool) -> dict:
    return {
        "out": options.out,
        "init_from": options.init_from,
        "channels": state["channels"],
        "parameters": state["parameters"],
        "levels": state["levels"],
        "data": {"images": len(used), "files": used[:50]},
        "correlated": correlated,
        "loss": "neighbor2neighbor-mse" + (" on pixel-shuffle phases" if correlated else ""),
        "adapted": state["adapted"],
        "steps": state["step"],
        "seconds": round(state["seconds"], 1),
        "start_val_loss": state["start_loss"],
        "best_val_loss": state["best_loss"],
        "validation": [[row["step"], round(row["val_loss"], 8)] for row in state["history"]],
    }


def _save_checkpoint(model, folder: Path) -> None:
    from denoise import train

    train._save_atomic(model, folder / "checkpoint.keras")


def _save_state(folder: Path, options: AdaptOptions, state: dict) -> None:
    from denoise.io import write_atomic

    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"options": dataclasses.asdict(options), "state": state}, indent=2, default=str)
    write_atomic(folder / "state.json", (text + "\n").encode())
