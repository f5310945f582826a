"""Training data: clean images from a folder, an ``.npz`` file or tfds, as tf.data pipelines of
(noisy input, clean target) pairs with the noise drawn on the fly.

Sources (``--data``):

- a folder of clean images of any size (recursive): random patches, flips and 90-degree turns;
- ``PATH.npz`` with ``x_train`` / ``x_test`` arrays (N, H, W) or (N, H, W, C), uint8;
- ``tfds:NAME[:SPLIT]``: a tfds image data set already present in ``--data-dir``.

Validation noise is fixed by a seed, so the validation loss compares across epochs.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np

from denoise import io
from denoise.noise import NoiseSpec, add_noise_uint, seed_for


@dataclasses.dataclass(frozen=True)
class DataOptions:
    """Where the clean images come from and how training pairs are made."""

    source: str
    channels: int = 1
    patch_size: int = 64
    batch_size: int = 32
    noise: NoiseSpec = NoiseSpec("gaussian", 0.0, 75.0)
    clip: bool = True
    seed: int = 0
    data_dir: str | None = None
    validation: str | None = None  # a separate source for validation; default: held out
    validation_sigma: float = 25.0  # Gaussian sigma (0-255) of the fixed validation noise
    validation_count: int = 1000  # at most this many validation images


class DataUnavailable(ValueError):
    """The data set is not where it was asked for, with a message that says how to provide it."""


def clean_images(source: str, channels: int, data_dir: str | None = None):
    """Return ``(train, validation)``: lists or arrays of uint8 clean images from ``source``.

    ``validation`` is None when the source has no split of its own (a folder): the caller then
    holds out part of the training files.
    """
    if source.startswith("tfds:"):
        return _tfds_images(source[5:], channels, data_dir)
    path = Path(source)
    if path.suffix == ".npz":
        if not path.is_file():
            raise DataUnavailable(f"{path}: no such .npz file")
        with np.load(path) as arrays:
            missing = {"x_train", "x_test"} - set(arrays.files)
            if missing:
                raise DataUnavailable(f"{path}: missing arrays {', '.join(sorted(missing))}")
            return _as_channels(arrays["x_train"], channels), _as_channels(arrays["x_test"], channels)
    if path.is_dir():
        files = [file for file, _ in io.iter_inputs([path])]
        if not files:
            raise DataUnavailable(f"{path}: no images found (PNG, JPEG, BMP, TIFF, WebP)")
        return files, None
    raise DataUnavailable(
        f"{source}: not a folder, an .npz file or tfds:NAME (e.g. tfds:fashion_mnist)"
    )


def _as_channels(array: np.ndarray, channels: int) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim == 3:
        array = array[..., None]
    if array.shape[-1] == 3 and channels == 1:
        array = np.round(array @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)[..., None]
    elif array.shape[-1] == 1 and channels == 3:
        array = np.repeat(array, 3, axis=-1)
    return array.astype(np.uint8)


def _tfds_images(spec: str, channels: int, data_dir: str | None):
    """Images of a tfds data set that is already downloaded and prepared; never downloads."""
    import tensorflow_datasets as tfds

    name, _, split = spec.partition(":")
    builder = tfds.builder(name, data_dir=data_dir)
    if not Path(builder.data_dir).joinpath("dataset_info.json").exists():
        raise DataUnavailable(
            f"tfds data set {name!r} is not prepared in {builder.data_dir}; this tool does not "
            f"download. Prepare it on a machine with internet (python -m tensorflow_datasets.scripts."
            f"download_and_prepare --datasets={name} --data_dir=DIR) and pass --data-dir DIR, or "
            f"use a folder of images or an .npz file."
        )
    splits = list(builder.info.splits.keys())
    train_split = split or ("train" if "train" in splits else splits[0])
    test_split = next((s for s in ("test", "validation") if s in splits and s != train_split), None)
    key = next(k for k, f in builder.info.features.items() if "Image" in type(f).__name__)

    def arrays(which):
        dataset = builder.as_dataset(split=which)
        return _as_channels(np.stack([example[key] for example in tfds.as_numpy(dataset)]), channels)

    train = arrays(train_split)
    if test_split is None:  # a single split: hold out its last 10 %
        cut = max(1, len(train) // 10)
        return train[:-cut], train[-cut:]
    return train, arrays(test_split)


def split_files(files: list[Path], fraction: float = 0.1) -> tuple[list[Path], list[Path]]:
    """Hold out about ``fraction`` of the files by a hash of their names (stable, never shared)."""
    def bucket(path: Path) -> float:
        return int(hashlib.sha256(path.name.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF

    held = [file for file in files if bucket(file) < fraction] or files[-1:]
    return [file for file in files if file not in held], held


def training_dataset(images, options: DataOptions, with_sigma: bool, start_step: int = 0):
    """An infinite, shuffled tf.data pipeline of ``(noisy, clean)`` batches.

    ``images`` is a list of files (decoded once, then kept in memory) or a uint8 array.
    ``start_step`` offsets the noise seeds so a resumed run does not replay the same noise.
    """
    import tensorflow as tf

    autotune = tf.data.AUTOTUNE
    if isinstance(images, np.ndarray):
        dataset = tf.data.Dataset.from_tensor_slices(images)
    else:
        paths = [str(file) for file in images]

        def load(path):
            array = tf.numpy_function(
                lambda p: io.load_array(Path(p.decode()), options.channels), [path], tf.uint8
            )
            return tf.ensure_shape(array, [None, None, options.channels])

        dataset = tf.data.Dataset.from_tensor_slices(paths).map(load, num_parallel_calls=autotune).cache()

    size = options.patch_size
    # Several patches per decoded image per pass keeps the decode cost low for big images.
    patches_per_image = 8 if not isinstance(images, np.ndarray) else 1

    def crops(image):
        image = _pad_to(image, size)
        return tf.data.Dataset.range(patches_per_image).map(
            lambda _: tf.image.random_crop(image, [size, size, options.channels])
        )

    dataset = dataset.repeat().shuffle(1000, seed=options.seed).flat_map(crops)
    dataset = dataset.shuffle(4 * options.batch_size, seed=options.seed + 1)
    counter = tf.data.Dataset.counter(start=start_step * options.batch_size)
    dataset = tf.data.Dataset.zip((dataset, counter))

    def make_pair(patch, index):
        seed = tf.stack([tf.cast(options.seed, tf.int64), index])
        clean = _augment(tf.cast(patch, tf.float32) / 255.0, seed)
        noisy, sigma = _noise(clean, options, seed)
        return _inputs(noisy, sigma, with_sigma), clean

    dataset = dataset.map(make_pair, num_parallel_calls=autotune)
    return dataset.batch(options.batch_size, drop_remainder=True).prefetch(autotune)


def _pad_to(image, size):
    """Reflect-pad an image smaller than the patch size (e.g. 28x28 for 32x32 patches)."""
    import tensorflow as tf

    shape = tf.shape(image)
    pad_h = tf.maximum(size - shape[0], 0)
    pad_w = tf.maximum(size - shape[1], 0)
    return tf.pad(image, [[0, pad_h], [0, pad_w], [0, 0]], mode="SYMMETRIC")


def _augment(image, seed):
    """One of the eight flips and 90-degree turns, drawn from the seed."""
    import tensorflow as tf

    choice = tf.random.stateless_uniform([], tf.cast(seed, tf.int64) + 7, 0, 8, dtype=tf.int32)
    image = tf.image.rot90(image, choice % 4)
    return tf.cond(choice >= 4, lambda: tf.image.flip_left_right(image), lambda: image)


def _noise(clean, options: DataOptions, seed):
    from denoise.noise import add_noise_tf

    return add_noise_tf(clean, options.noise, seed, clip=options.clip)


def _inputs(noisy, sigma, with_sigma: bool):
    import tensorflow as tf

    if not with_sigma:
        return noisy
    return {"image": noisy, "sigma": tf.reshape(tf.cast(sigma, tf.float32), [1])}


def validation_dataset(images, options: DataOptions, with_sigma: bool, multiple: int = 16):
    """Fixed noisy validation pairs: Gaussian noise of ``validation_sigma`` seeded per image,
    rounded to uint8 as the benchmark protocol does, cropped to a multiple of ``multiple``."""
    import tensorflow as tf

    spec = NoiseSpec("gaussian", options.validation_sigma, options.validation_sigma)
    noisy_images, clean_images_, names = [], [], []
    items = list(images[: options.validation_count])
    for index, item in enumerate(items):
        name = item.name if isinstance(item, Path) else str(index)
        clean = io.load_array(item, options.channels) if isinstance(item, Path) else item
        height = clean.shape[0] // multiple * multiple or clean.shape[0]
        width = clean.shape[1] // multiple * multiple or clean.shape[1]
        clean = clean[:height, :width]
        noisy = add_noise_uint(clean, spec, np.random.default_rng(seed_for(name, options.seed)))
        noisy_images.append(noisy)
        clean_images_.append(clean)
        names.append(name)

    sigma = np.float32(options.validation_sigma / 255.0)
    same_shape = len({image.shape for image in clean_images_}) == 1
    batch = options.batch_size if same_shape else 1

    def generator():
        for noisy, clean in zip(noisy_images, clean_images_):
            noisy01 = noisy.astype(np.float32) / 255.0
            inputs = {"image": noisy01, "sigma": np.array([sigma])} if with_sigma else noisy01
            yield inputs, clean.astype(np.float32) / 255.0

    image_spec = tf.TensorSpec([None, None, options.channels], tf.float32)
    input_spec = {"image": image_spec, "sigma": tf.TensorSpec([1], tf.float32)} if with_sigma else image_spec
    dataset = tf.data.Dataset.from_generator(generator, output_signature=(input_spec, image_spec))
    return dataset.batch(batch).cache().prefetch(tf.data.AUTOTUNE)
