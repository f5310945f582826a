"""Training data: clean images from a folder, an ``.npz`` file or tfds, as tf.data pipelines of
(noisy input, clean target) pairs with the noise drawn on the fly.

Sources (``--data``):

- a folder of clean images of any size (recursive): random patches, flips and 90-degree turns;
- ``PATH.npz`` with ``x_train`` / ``x_test`` arrays (N, H, W) or (N, H, W, C), uint8;
- ``tfds:NAME[:SPLIT]``: a tfds image data set, from ``--data-dir`` or downloaded when online;
- several folders, joined by ``SEVERAL`` (``--data`` given more than once): their files together.

Training and validation images never overlap: a folder holds out a stable tenth of its files,
an ``.npz`` validates on ``x_test``, tfds on its test (or validation) split. With a separate
validation source a folder keeps all its files, unless ``hold_out`` asks for its tenth as well.
Validation noise is fixed by a seed, so the validation loss compares across epochs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import socket
from pathlib import Path

import numpy as np

from denoise import io
from denoise.noise import NoiseSpec, add_noise_uint, draw, effective_sigma, seed_for

DEFAULT_PATCH = 64  # patch size for folders of images of any size


@dataclasses.dataclass(frozen=True)
class DataOptions:
    """Where the clean images come from and how training pairs are made."""

    source: str
    channels: int = 1
    patch_size: int | None = None  # None: DEFAULT_PATCH for folders, whole images for arrays
    batch_size: int = 32
    noise: NoiseSpec = NoiseSpec("gaussian", 0.0, 75.0)
    clip: bool = True
    seed: int = 0
    data_dir: str | None = None
    validation: str | None = None  # a separate source for validation; default: held out
    validation_sigma: float = 25.0  # Gaussian sigma (0-255) of the fixed validation noise
    validation_count: int = 1000  # at most this many validation images
    hold_out: bool = False  # with ``validation``: still hold out a folder's tenth and validate on both
    augment: bool = True  # random flips and 90-degree turns
    # Shrink training images by this factor (block mean) first: JPEG photos are not clean at
    # full size (4:2:0 chroma, compression artefacts, sensor noise), and a model learns to
    # reproduce whatever its targets hold; a factor of 2 averages those away.
    downscale: int = 1


SEVERAL = " + "  # joins several folders in one source (as the manifest's ``data`` shows them)


class DataUnavailable(ValueError):
    """The data set is not where it was asked for, with a message that says how to provide it."""


# --------------------------------------------------------------------------------------------
# Clean images
# --------------------------------------------------------------------------------------------


def clean_images(source: str, channels: int, data_dir: str | None = None):
    """Return ``(train, validation)`` clean images of ``source``: a list of files, a uint8 array
    (N, H, W, C) when all images share one size, or a list of uint8 arrays.

    ``validation`` is None when the source has no split of its own (a folder): the caller then
    holds out part of the training files with :func:`split_files`.
    """
    if source.startswith("tfds:"):
        return _tfds_images(source[5:], channels, data_dir)
    path = Path(source)
    if path.suffix == ".npz":
        return _npz_arrays(path, channels, ("x_train", "x_test"))
    if path.is_dir() or SEVERAL in source:
        return _folder_files(source), None
    raise DataUnavailable(f"{source}: not a folder, an .npz file or tfds:NAME (e.g. tfds:fashion_mnist)")


def validation_images(source: str, channels: int, data_dir: str | None = None):
    """Clean images of a separate validation source: all of a folder, an .npz's ``x_test``,
    a tfds data set's test split (or the split named in ``tfds:NAME:SPLIT``)."""
    if source.startswith("tfds:"):
        name, _, split = source[5:].partition(":")
        builder = _tfds_builder(name, data_dir)
        return _tfds_split(builder, split or _tfds_splits(builder)[1] or "train", channels)
    path = Path(source)
    if path.suffix == ".npz":
        return _npz_arrays(path, channels, ("x_test",))[0]
    if path.is_dir() or SEVERAL in source:
        return _folder_files(source)
    raise DataUnavailable(f"{source}: not a folder, an .npz file or tfds:NAME")


def _folder_files(source: str) -> list[Path]:
    """The images of one folder, or of several joined by ``SEVERAL``, in that order."""
    files = []
    for folder in map(Path, source.split(SEVERAL)):
        if not folder.is_dir():
            raise DataUnavailable(f"{folder}: not a folder (several sources can only be folders)")
        found = [file for file, _ in io.iter_inputs([folder])]
        if not found:
            raise DataUnavailable(f"{folder}: no images found (PNG, JPEG, BMP, TIFF, WebP)")
        files += found
    return files


def _npz_arrays(path: Path, channels: int, keys: tuple[str, ...]):
    if not path.is_file():
        raise DataUnavailable(f"{path}: no such .npz file")
    with np.load(path) as arrays:
        missing = set(keys) - set(arrays.files)
        if missing:
            raise DataUnavailable(f"{path}: missing arrays {', '.join(sorted(missing))} (need x_train and x_test)")
        result = tuple(_as_channels(_with_channel_axis(arrays[key]), channels) for key in keys)
    return result if len(result) > 1 else (result[0], None)


def _with_channel_axis(stack: np.ndarray) -> np.ndarray:
    """(N, H, W) grey stacks get their channel axis; (N, H, W, C) ones are left alone."""
    return stack[..., None] if stack.ndim == 3 else stack


def _as_channels(array: np.ndarray, channels: int) -> np.ndarray:
    """uint8 images (..., H, W, channels) from (..., H, W, C) grey, RGB or RGBA images of any
    dtype, or a single (H, W) grey image."""
    array = _to_uint8(np.asarray(array))
    if array.ndim == 2:
        array = array[..., None]
    if array.shape[-1] == 4:
        array = array[..., :3]
    if array.shape[-1] == 3 and channels == 1:
        array = np.round(array @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)[..., None]
    elif array.shape[-1] == 1 and channels == 3:
        array = np.repeat(array, 3, axis=-1)
    return array


def _to_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.integer):
        return np.round(array * (255.0 / np.iinfo(array.dtype).max)).astype(np.uint8)
    if array.size and float(array.max()) <= 1.0:  # floats in [0, 1]
        array = array * 255.0
    return np.clip(np.round(array), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# tfds
# --------------------------------------------------------------------------------------------


def _tfds_images(spec: str, channels: int, data_dir: str | None):
    """``(train, validation)`` of a tfds data set: the split asked for (default train) and the
    test or validation split, else the last tenth of the training split."""
    name, _, split = spec.partition(":")
    builder = _tfds_builder(name, data_dir)
    default_train, test_split = _tfds_splits(builder)
    train_split = split or default_train
    if test_split == train_split:
        test_split = None
    train = _tfds_split(builder, train_split, channels)
    if test_split is None:
        cut = max(1, len(train) // 10)
        return train[:-cut], train[-cut:]
    return train, _tfds_split(builder, test_split, channels)


def _tfds_splits(builder) -> tuple[str, str | None]:
    """The training split and the held-out split (test, else validation) of a builder."""
    # Without metadata (tfds.testing.mock_data) a builder lists no splits and accepts any name.
    splits = list(builder.info.splits.keys()) or ["train", "test"]
    train = "train" if "train" in splits else splits[0]
    held = next((name for name in ("test", "validation") if name in splits and name != train), None)
    return train, held


def _tfds_builder(name: str, data_dir: str | None):
    """The tfds builder of ``name``, prepared: found in ``data_dir``, else downloaded when online.

    Raises :class:`DataUnavailable` at once when it is absent and cannot be downloaded, rather
    than letting tfds retry the download for minutes.
    """
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise DataUnavailable(f"tfds has no data set named {name!r} (see tfds.list_builders())") from None
    if builder.is_prepared():
        return builder
    if not _can_download():
        raise DataUnavailable(_tfds_help(name, builder, "cannot be downloaded: no network"))
    try:
        builder.download_and_prepare()
    except Exception as error:  # tfds raises many kinds (network, manual downloads, checksums)
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise DataUnavailable(_tfds_help(name, builder, f"could not be downloaded ({reason})")) from None
    return builder


def _tfds_help(name: str, builder, why: str) -> str:
    where = _data_dir_root(builder)
    return (
        f"tfds data set {name!r} is not in {where} and {why}. Prepare it on a machine with "
        f"internet access (tfds build {name} --data_dir DIR), copy DIR here and pass --data-dir DIR; "
        f"or train on a folder of images or an .npz file with x_train and x_test arrays."
    )


def _data_dir_root(builder) -> str:
    return str(getattr(builder, "data_dir_root", None) or Path(builder.data_dir).parent.parent)


def _can_download(host: str = "storage.googleapis.com", timeout: float = 3.0) -> bool:
    """Whether the tfds download servers answer within ``timeout`` seconds (proxies: assume so)."""
    if any(os.environ.get(key) for key in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def _tfds_split(builder, split: str, channels: int):
    """All images of one split: a uint8 array when they share one size, else a list of arrays."""
    import tensorflow_datasets as tfds

    features = builder.info.features
    key = next((k for k, f in features.items() if type(f).__name__ == "Image"), None)
    if key is None:
        raise DataUnavailable(f"tfds data set {builder.name!r} has no image feature")
    dataset = builder.as_dataset(split=split)
    images = [_as_channels(example[key], channels) for example in tfds.as_numpy(dataset)]
    if not images:
        raise DataUnavailable(f"tfds data set {builder.name!r}: split {split!r} is empty")
    return np.stack(images) if len({image.shape for image in images}) == 1 else images


# --------------------------------------------------------------------------------------------
# Splits and sizes
# --------------------------------------------------------------------------------------------


def split_files(files: list[Path], fraction: float = 0.1) -> tuple[list[Path], list[Path]]:
    """Hold out about ``fraction`` of the files by a hash of their names (stable, never shared)."""

    def bucket(path: Path) -> float:
        return int(hashlib.sha256(path.name.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF

    if len(files) < 2:
        raise DataUnavailable("need at least 2 images to hold one out for validation (or pass --val-data)")
    held = {file for file in files if bucket(file) < fraction} or {files[-1]}
    return [file for file in files if file not in held], [file for file in files if file in held]


def without(train, validation):
    """``train`` files less any that are also validation files (the same file given twice)."""
    if isinstance(train, np.ndarray) or isinstance(validation, np.ndarray):
        return train
    held = {Path(item).resolve() for item in validation if isinstance(item, Path)}
    kept = [item for item in train if not (isinstance(item, Path) and item.resolve() in held)]
    if not kept:
        raise DataUnavailable("every training image is also a validation image")
    return kept


def describe_validation(options: DataOptions) -> str:
    """Where the validation images come from, in words (for the manifest)."""
    if options.validation:
        where = options.validation + (f" and a tenth of {options.source}, held out by a hash of their names"
                                      if options.hold_out else "")
    elif options.source.startswith("tfds:"):
        where = f"{options.source}: its test (or validation) split, else the last tenth of its training split"
    elif options.source.endswith(".npz"):
        where = f"{options.source}: x_test"
    else:
        where = f"{options.source}: a tenth of the files, held out by a hash of their names"
    return f"{where} (at most {options.validation_count} images)"


def natural_patch(images) -> int:
    """The patch size when none is asked for: whole images for a stack of one size, else
    :data:`DEFAULT_PATCH`."""
    if isinstance(images, np.ndarray):
        return int(min(images.shape[1:3]))
    return DEFAULT_PATCH


# --------------------------------------------------------------------------------------------
# tf.data pipelines
# --------------------------------------------------------------------------------------------


def training_dataset(images, options: DataOptions, with_sigma: bool, start_step: int = 0):
    """An infinite, shuffled tf.data pipeline of ``(noisy, clean)`` batches of square patches
    of ``options.patch_size``; images smaller than that are mirrored out to it.

    ``images`` is a uint8 array, a list of uint8 arrays, or a list of files (decoded once, then
    kept in memory). ``start_step`` offsets the noise seeds so a resumed run sees new noise.
    """
    import tensorflow as tf

    if not options.patch_size:
        raise ValueError("training_dataset needs options.patch_size")
    autotune = tf.data.AUTOTUNE
    dataset = _shuffled_images(images, options.channels, options.seed, options.downscale)
    size = options.patch_size
    # Several patches per decoded image per pass keeps the decode cost low for big images.
    patches_per_image = 1 if isinstance(images, np.ndarray) else 8

    def crop(image):
        return tf.image.random_crop(_pad_to(image, size), [size, size, options.channels])

    if patches_per_image == 1:
        dataset = dataset.map(crop, num_parallel_calls=autotune)
    else:
        dataset = dataset.flat_map(lambda image: tf.data.Dataset.from_tensors(image).repeat(patches_per_image).map(crop))
        dataset = dataset.shuffle(4 * options.batch_size, seed=options.seed + 1)
    counter = tf.data.Dataset.counter(start=start_step * options.batch_size)
    dataset = tf.data.Dataset.zip((dataset, counter))

    def make_pair(patch, index):
        seed = tf.stack([tf.cast(options.seed, tf.int64), index])
        clean = tf.cast(patch, tf.float32) / 255.0
        if options.augment:
            clean = _augment(clean, seed)
        noisy, sigma = _noise(clean, options, seed)
        return _inputs(noisy, sigma, with_sigma), clean

    dataset = dataset.map(make_pair, num_parallel_calls=autotune)
    return dataset.batch(options.batch_size, drop_remainder=True).prefetch(autotune)


def shrink(image: np.ndarray, factor: int) -> np.ndarray:
    """A uint8 (..., H, W, C) image or stack shrunk by an integer ``factor``: the mean of each
    factor x factor block (edges that do not fill a block are dropped)."""
    if factor == 1:
        return image
    height, width, channels = image.shape[-3] // factor, image.shape[-2] // factor, image.shape[-1]
    if not height or not width:
        raise ValueError(f"downscale {factor}: an image of {image.shape[-3]}x{image.shape[-2]} is smaller than that")
    blocks = image[..., : height * factor, : width * factor, :].reshape(
        *image.shape[:-3], height, factor, width, factor, channels)
    return np.round(blocks.mean(axis=(-4, -2))).astype(np.uint8)


def _shuffled_images(images, channels: int, seed: int, downscale: int = 1):
    """An endless tf.data pipeline of the uint8 (H, W, channels) images, shrunk by
    ``downscale``, reshuffled every pass."""
    import tensorflow as tf

    if isinstance(images, np.ndarray):  # shuffling indices shuffles the whole set at no cost
        images = shrink(images, downscale)
        pixels = tf.constant(images)
        indices = tf.data.Dataset.range(len(images)).shuffle(len(images), seed=seed).repeat()
        return indices.map(lambda index: tf.gather(pixels, index))
    signature = tf.TensorSpec([None, None, channels], tf.uint8)
    if all(isinstance(item, np.ndarray) for item in images):
        dataset = tf.data.Dataset.from_generator(lambda: (shrink(image, downscale) for image in images),
                                                 output_signature=signature)
    else:
        paths = [str(file) for file in images]

        def load(path):
            array = tf.numpy_function(lambda p: shrink(io.load_array(Path(p.decode()), channels), downscale),
                                      [path], tf.uint8)
            return tf.ensure_shape(array, [None, None, channels])

        dataset = tf.data.Dataset.from_tensor_slices(paths).map(load, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.cache().shuffle(min(len(images), 10_000), seed=seed).repeat()


def _pad_to(image, size: int):
    """Mirror-pad an image smaller than ``size`` (e.g. 28x28 for 64x64 patches) up to it.

    Each round pads at most the image's own size (tf.pad's limit), so tiny images repeat.
    """
    import tensorflow as tf

    def short(padded):
        return tf.reduce_any(tf.shape(padded)[:2] < size)

    def grow(padded):
        shape = tf.shape(padded)
        pad_h = tf.minimum(tf.maximum(size - shape[0], 0), shape[0])
        pad_w = tf.minimum(tf.maximum(size - shape[1], 0), shape[1])
        return (tf.pad(padded, [[0, pad_h], [0, pad_w], [0, 0]], mode="SYMMETRIC"),)

    channels = image.shape[-1]
    (padded,) = tf.while_loop(short, grow, (image,), shape_invariants=(tf.TensorShape([None, None, channels]),))
    return padded


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


def validation_noise(options: DataOptions) -> NoiseSpec:
    """Gaussian noise of ``validation_sigma`` for Gaussian training (it compares with the
    benchmarks), else the training noise itself."""
    if options.noise.kind == "gaussian":
        return NoiseSpec("gaussian", options.validation_sigma, options.validation_sigma)
    return options.noise


def validation_dataset(images, options: DataOptions, with_sigma: bool, multiple: int = 16, size: int | None = None):
    """Fixed noisy validation pairs, noise seeded per image and rounded to uint8 as the benchmark
    protocol does. Images are cropped to a multiple of ``multiple``, or centred on ``size`` x
    ``size`` for fixed-size models (mirror-padded when smaller)."""
    import tensorflow as tf

    spec = validation_noise(options)
    pairs = []
    for index, item in enumerate(list(images[: options.validation_count])):
        name = item.name if isinstance(item, Path) else str(index)
        clean = io.load_array(item, options.channels) if isinstance(item, Path) else item
        clean = _fit(clean, size) if size else _crop_to_multiple(clean, multiple)
        rng = np.random.default_rng(seed_for(name, options.seed))
        kind, level = draw(spec, rng)
        noisy = add_noise_uint(clean, NoiseSpec(kind, level, level), rng)
        pairs.append((noisy, clean, np.float32(effective_sigma(kind, level))))

    same_shape = len({clean.shape for _, clean, _ in pairs}) == 1
    batch = options.batch_size if same_shape else 1

    def generator():
        for noisy, clean, sigma in pairs:
            noisy01 = noisy.astype(np.float32) / 255.0
            inputs = {"image": noisy01, "sigma": np.array([sigma])} if with_sigma else noisy01
            yield inputs, clean.astype(np.float32) / 255.0

    image_spec = tf.TensorSpec([None, None, options.channels], tf.float32)
    input_spec = {"image": image_spec, "sigma": tf.TensorSpec([1], tf.float32)} if with_sigma else image_spec
    dataset = tf.data.Dataset.from_generator(generator, output_signature=(input_spec, image_spec))
    # A known length spares Keras a "ran out of data" warning after the first pass.
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(len(pairs)))
    return dataset.batch(batch).cache().prefetch(tf.data.AUTOTUNE)


def _crop_to_multiple(image: np.ndarray, multiple: int) -> np.ndarray:
    height = image.shape[0] // multiple * multiple or image.shape[0]
    width = image.shape[1] // multiple * multiple or image.shape[1]
    return image[:height, :width]


def _fit(image: np.ndarray, size: int) -> np.ndarray:
    """The central ``size`` x ``size`` part of an image, mirror-padded first when smaller."""
    pad = [(0, max(0, size - image.shape[0])), (0, max(0, size - image.shape[1])), (0, 0)]
    image = np.pad(image, pad, mode="symmetric")
    top, left = (image.shape[0] - size) // 2, (image.shape[1] - size) // 2
    return image[top : top + size, left : left + size]
