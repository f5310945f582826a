"""Training data sources (folder, .npz, tfds) and the tf.data pipelines built on them."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from denoise import data
from denoise.data import DataOptions, DataUnavailable
from denoise.noise import NoiseSpec

from conftest import noisy_array, save


@pytest.fixture()
def folder(tmp_path) -> Path:
    """Twenty grey PNGs of assorted sizes, two of them smaller than a 32x32 patch."""
    sizes = [(40, 56), (24, 20), (64, 48), (18, 30)] * 5
    for index, (height, width) in enumerate(sizes):
        save(tmp_path / "clean" / f"sub{index % 2}" / f"img{index:02d}.png", noisy_array(height, width, 1, seed=index))
    return tmp_path / "clean"


@pytest.fixture()
def npz(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "tiny.npz"
    np.savez(path, x_train=rng.integers(0, 256, (24, 28, 28), np.uint8), x_test=rng.integers(0, 256, (6, 28, 28), np.uint8))
    return path


def options(source, **kwargs) -> DataOptions:
    return DataOptions(source=str(source), batch_size=4, **kwargs)


def first_batch(dataset):
    return next(iter(dataset))


# --- Sources --------------------------------------------------------------------------------


def test_folder_holds_out_a_stable_disjoint_part(folder):
    files, held = data.clean_images(str(folder), 1)
    assert held is None and len(files) == 20
    train, validation = data.split_files(files)
    assert validation and train and not set(train) & set(validation)
    assert data.split_files(list(reversed(files)))[1] == sorted(validation, reverse=True)


def test_npz_gives_x_train_and_x_test_as_uint8_stacks(npz):
    train, validation = data.clean_images(str(npz), 1)
    assert train.shape == (24, 28, 28, 1) and validation.shape == (6, 28, 28, 1) and train.dtype == np.uint8
    colour, _ = data.clean_images(str(npz), 3)
    assert colour.shape == (24, 28, 28, 3)
    assert data.validation_images(str(npz), 1).shape == (6, 28, 28, 1)


def test_missing_sources_say_what_is_wrong(tmp_path):
    np.savez(tmp_path / "bad.npz", x_train=np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(DataUnavailable, match="missing arrays x_test"):
        data.clean_images(str(tmp_path / "bad.npz"), 1)
    with pytest.raises(DataUnavailable, match="no such .npz"):
        data.clean_images(str(tmp_path / "none.npz"), 1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataUnavailable, match="no images found"):
        data.clean_images(str(tmp_path / "empty"), 1)
    with pytest.raises(DataUnavailable, match="not a folder, an .npz file or tfds"):
        data.clean_images(str(tmp_path / "nothing"), 1)


def test_arrays_of_any_dtype_and_layout_become_uint8_channels():
    rgb = np.zeros((2, 4, 4, 3), np.uint8)
    rgb[..., 0] = 255
    assert data._as_channels(rgb, 1)[..., 0].max() == 76  # 0.299 * 255, rounded
    grey_stack = data._with_channel_axis(np.full((4, 4, 4), 200, np.uint8))
    assert data._as_channels(grey_stack, 3).shape == (4, 4, 4, 3)
    assert data._as_channels(np.full((4, 4), 200, np.uint8), 1).shape == (4, 4, 1)
    assert data._as_channels(np.full((5, 5, 4), 9, np.uint8), 3).shape == (5, 5, 3)  # RGBA drops alpha
    assert data._as_channels(np.full((3, 3), 65535, np.uint16), 1).max() == 255
    assert data._as_channels(np.full((3, 3), 0.5, np.float32), 1).max() == 128


def test_a_separate_validation_folder_is_never_trained_on(folder):
    files = data._folder_files(str(folder))
    kept = data.without(files, files[:5])
    assert len(kept) == 15 and not set(kept) & set(files[:5])
    with pytest.raises(DataUnavailable, match="also a validation image"):
        data.without(files, files)


def test_several_folders_are_one_source_and_each_must_hold_images(folder, tmp_path):
    save(tmp_path / "more" / "extra.png", noisy_array(40, 40, 1, seed=99))
    files, held = data.clean_images(f"{folder}{data.SEVERAL}{tmp_path / 'more'}", 1)
    assert held is None and len(files) == 21 and files[-1].name == "extra.png"
    assert data.validation_images(f"{folder}{data.SEVERAL}{tmp_path / 'more'}", 1) == files
    with pytest.raises(DataUnavailable, match="nowhere: not a folder"):
        data.clean_images(f"{folder}{data.SEVERAL}{tmp_path / 'nowhere'}", 1)


def test_tfds_through_mock_data(monkeypatch):
    import tensorflow_datasets as tfds

    monkeypatch.setattr(data, "_can_download", lambda: True)  # the mocked download is a no-op
    with tfds.testing.mock_data(num_examples=6):
        train, validation = data.clean_images("tfds:mnist", 1)
        colour = data.validation_images("tfds:mnist:test", 3)
    assert train.shape == (6, 28, 28, 1) and validation.shape == (6, 28, 28, 1) and train.dtype == np.uint8
    assert colour.shape == (6, 28, 28, 3)


def test_tfds_absent_and_offline_fails_fast_saying_how_to_provide_it(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_can_download", lambda: False)
    started = time.monotonic()
    with pytest.raises(DataUnavailable) as error:
        data.clean_images("tfds:mnist", 1, data_dir=str(tmp_path))
    assert time.monotonic() - started < 10
    message = str(error.value)
    assert "cannot be downloaded" in message and "--data-dir" in message and "tfds build mnist" in message
    with pytest.raises(DataUnavailable, match="no data set named 'no_such_set'"):
        data.clean_images("tfds:no_such_set", 1, data_dir=str(tmp_path))


def test_download_check_honours_a_proxy_and_reads_a_failed_connection_as_offline(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    assert data._can_download()
    for key in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(key, raising=False)
    calls = []

    def unreachable(address, timeout):
        calls.append((address, timeout))
        raise OSError("Name or service not known")

    monkeypatch.setattr(data.socket, "create_connection", unreachable)
    assert not data._can_download()
    assert calls == [(("storage.googleapis.com", 443), 3.0)]


# --- Pipelines ------------------------------------------------------------------------------


def test_npz_patches_larger_than_the_images_are_mirror_padded(npz):
    train, _ = data.clean_images(str(npz), 1)
    spec = options(npz, patch_size=64, augment=False)
    noisy, clean = first_batch(data.training_dataset(train, spec, with_sigma=False))
    assert noisy.shape == clean.shape == (4, 64, 64, 1)
    clean = clean.numpy()
    assert 0 <= clean.min() and clean.max() <= 1
    # Mirrored, not zero-filled: the padding repeats image content.
    assert np.array_equal(clean[:, 28:56], clean[:, 27::-1][:, :28])


def test_whole_images_by_default_for_arrays(npz):
    train, _ = data.clean_images(str(npz), 1)
    assert data.natural_patch(train) == 28 and data.natural_patch([Path("a.png")]) == data.DEFAULT_PATCH
    spec = options(npz, patch_size=28, augment=False)
    _, clean = first_batch(data.training_dataset(train, spec, with_sigma=False))
    images = {image.tobytes() for image in (train.astype(np.float32) / 255.0)}
    assert all(image.tobytes() in images for image in clean.numpy())


def test_folder_patches_with_noise_levels_for_the_model(folder):
    files, _ = data.clean_images(str(folder), 1)
    spec = options(folder, patch_size=32, noise=NoiseSpec("gaussian", 10, 50), clip=False)
    inputs, clean = first_batch(data.training_dataset(files, spec, with_sigma=True))
    assert inputs["image"].shape == clean.shape == (4, 32, 32, 1)
    sigma = inputs["sigma"].numpy()
    assert sigma.shape == (4, 1) and ((10 / 255 <= sigma) & (sigma <= 50 / 255 + 1e-6)).all()
    measured = (inputs["image"].numpy() - clean.numpy()).reshape(4, -1).std(axis=1)
    assert np.allclose(measured, sigma[:, 0], rtol=0.25)


def test_every_epoch_sees_new_noise_and_a_resumed_run_new_noise_too(npz):
    train, _ = data.clean_images(str(npz), 1)
    spec = options(npz, augment=False, patch_size=28)
    dataset = data.training_dataset(train, spec, with_sigma=False)
    noises = [(noisy - clean).numpy() for noisy, clean in dataset.take(8)]
    assert len({noise.tobytes() for noise in noises}) == 8
    resumed = data.training_dataset(train, spec, with_sigma=False, start_step=100)
    noisy, clean = first_batch(resumed)
    assert not np.array_equal((noisy - clean).numpy(), noises[0])


def test_list_of_arrays_of_different_sizes(tmp_path):
    images = [noisy_array(20, 36, 1, seed=1)[..., None], noisy_array(40, 24, 1, seed=2)[..., None]]
    spec = DataOptions(source="arrays", batch_size=2, patch_size=32, noise=NoiseSpec("poisson", 30, 30))
    noisy, clean = first_batch(data.training_dataset(images, spec, with_sigma=False))
    assert noisy.shape == (2, 32, 32, 1)


def test_validation_noise_is_fixed_and_cropped_to_the_model(folder, npz):
    files, _ = data.clean_images(str(folder), 1)
    spec = options(folder)
    first = [noisy.numpy() for noisy, _ in data.validation_dataset(files[:4], spec, False, multiple=8)]
    again = [noisy.numpy() for noisy, _ in data.validation_dataset(files[:4], spec, False, multiple=8)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert all(image.shape[1] % 8 == 0 and image.shape[2] % 8 == 0 for image in first)
    assert all(np.array_equal(np.round(image * 255), image * 255) for image in first)  # uint8 levels

    fixed = data.validation_dataset(files[:4], spec, False, size=28)
    assert {tuple(noisy.shape[1:]) for noisy, _ in fixed} == {(28, 28, 1)}

    train, held = data.clean_images(str(npz), 1)
    noisy, clean = first_batch(data.validation_dataset(held, options(npz, validation_sigma=25), False))
    assert (noisy - clean).numpy().std() * 255 == pytest.approx(25, rel=0.15)
    poisson = options(npz, noise=NoiseSpec("poisson", 5, 5))
    inputs, clean = first_batch(data.validation_dataset(held, poisson, True))
    assert np.allclose(inputs["sigma"].numpy(), (0.5 / 5) ** 0.5)


def test_downscale_trains_on_block_means_of_the_images(tmp_path):
    # A pixel checkerboard of 0 and 200: every 2x2 block averages to 100.
    checkerboard = (np.indices((64, 80)).sum(axis=0) % 2 * 200).astype(np.uint8)
    save(tmp_path / "photos" / "board.png", checkerboard)
    files, _ = data.clean_images(str(tmp_path / "photos"), 1)
    spec = options(tmp_path / "photos", patch_size=32, augment=False)
    _, clean = first_batch(data.training_dataset(files, spec, with_sigma=False))
    assert set(np.unique(np.round(clean.numpy() * 255))) == {0, 200}
    spec = options(tmp_path / "photos", patch_size=32, augment=False, downscale=2)
    _, clean = first_batch(data.training_dataset(files, spec, with_sigma=False))
    assert set(np.unique(np.round(clean.numpy() * 255))) == {100}


def test_shrink_averages_blocks_of_images_and_stacks():
    stack = np.arange(2 * 5 * 7 * 3, dtype=np.uint8).reshape(2, 5, 7, 3)
    shrunk = data.shrink(stack, 2)
    assert shrunk.shape == (2, 2, 3, 3) and shrunk.dtype == np.uint8
    assert np.array_equal(shrunk[1, 1, 2], np.round(stack[1, 2:4, 4:6].reshape(-1, 3).mean(axis=0)))
    assert data.shrink(stack, 1) is stack
    with pytest.raises(ValueError, match="smaller"):
        data.shrink(stack, 8)
