"""Architectures: shapes, the tutorial's sizes, save and load, and backend independence."""

from __future__ import annotations

import ast
from pathlib import Path

import keras
import numpy as np
import pytest
from keras import layers

from denoise import models, registry


def image(batch: int = 2, size: int = 32, channels: int = 1) -> np.ndarray:
    return np.random.default_rng(0).random((batch, size, size, channels), dtype=np.float32)


def test_the_tutorial_models_have_the_tutorial_sizes():
    # TensorFlow's autoencoder tutorial: Dense(64) code on 28x28, and Conv 16 -> 8 -> ConvT 8 -> 16 -> 1.
    assert models.dense_autoencoder().count_params() == 784 * 64 + 64 + 64 * 784 + 784
    assert models.conv_autoencoder().count_params() == 160 + 1160 + 584 + 1168 + 145


@pytest.mark.parametrize("channels", [1, 3])
def test_every_architecture_maps_an_image_to_one_of_the_same_shape(channels):
    x = image(channels=channels)
    dense = models.build("dense", latent_dim=8, size=32, channels=channels)
    conv = models.build("conv", filters=4, channels=channels)
    unet = models.build("unet", filters=4, depth=3, blocks=1, channels=channels)
    for model, inputs in ((dense, x), (conv, x), (unet, {"image": x, "sigma": np.full((2, 1), 0.1, np.float32)})):
        output = np.asarray(model(inputs))
        assert output.shape == x.shape, model.name
        assert np.isfinite(output).all()
    assert 0 <= np.asarray(conv(x)).min() and np.asarray(conv(x)).max() <= 1  # sigmoid output


def test_size_multiples_and_fixed_sizes_are_read_off_the_model():
    assert registry.size_multiple(models.conv_autoencoder(filters=4)) == 4
    assert registry.size_multiple(models.unet(filters=4, depth=3, blocks=1)) == 8
    grey, colour = models.unet(filters=4, depth=3, blocks=1), models.unet(channels=3, filters=4, depth=3, blocks=1)
    # members run side by side on the same input: a mean or blend needs what each needs, not the product
    assert registry.size_multiple(models.mean_of([colour, grey])) == 8
    assert registry.size_multiple(models.luma_blend(colour, grey, 0.5)) == 8
    described = registry.describe(models.dense_autoencoder(latent_dim=4, size=28))
    assert described.tile_size == 28 and described.multiple == 1 and not described.noise_level_input
    assert registry.describe(models.unet(filters=4, depth=2, blocks=1)).noise_level_input
    assert not registry.describe(models.unet(filters=4, depth=2, blocks=1, noise_level_input=False)).noise_level_input


def test_the_noise_level_input_changes_the_output():
    unet = models.unet(filters=4, depth=2, blocks=1)
    x = image()
    low = np.asarray(unet({"image": x, "sigma": np.zeros((2, 1), np.float32)}))
    high = np.asarray(unet({"image": x, "sigma": np.ones((2, 1), np.float32)}))
    assert not np.allclose(low, high)


def test_saved_models_load_with_their_custom_layers(tmp_path):
    import keras

    model = models.unet(filters=4, depth=2, blocks=1)
    path = tmp_path / "unet.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, compile=False)
    inputs = {"image": image(), "sigma": np.full((2, 1), 0.2, np.float32)}
    assert np.allclose(np.asarray(model(inputs)), np.asarray(loaded(inputs)), atol=1e-6)


def test_build_refuses_unknown_architectures_and_arguments():
    with pytest.raises(ValueError, match="unknown architecture"):
        models.build("vit")
    with pytest.raises(ValueError, match="dense takes no filters"):
        models.build("dense", filters=4)
    with pytest.raises(ValueError, match="at least 1"):
        models.build("conv", filters=0)


def test_models_use_keras_alone_so_every_backend_runs_them():
    tree = ast.parse(Path(models.__file__).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= {"__future__", "inspect", "keras"}, imported


def test_a_unet_with_more_repeats_grows_from_one_with_fewer_and_computes_the_same():
    small = models.unet(channels=1, filters=4, depth=3, blocks=2)
    deeper = models.unet(channels=1, filters=4, depth=3, blocks=2, repeats=3)
    assert deeper.count_params() > small.count_params()
    added = models.grow_from(small, deeper)
    assert added == ["bottleneck_1", "bottleneck_2", "down0_1", "down0_2", "down1_1", "down1_2",
                     "up0_1", "up0_2", "up1_1", "up1_2"]
    sigma = np.array([[0.1], [0.3]], "float32")
    np.testing.assert_allclose(deeper.predict([image(), sigma], verbose=0), small.predict([image(), sigma], verbose=0),
                               atol=1e-6)
    assert models.unet_args(deeper) == dict(channels=1, filters=4, depth=3, blocks=2, noise_level_input=True,
                                            repeats=3)
    assert models.unet_args(models.unet(channels=3, filters=8, depth=1, blocks=3, noise_level_input=False)) == dict(
        channels=3, filters=8, depth=1, blocks=3, noise_level_input=False, repeats=1)
    with pytest.raises(ValueError, match="cannot grow"):
        models.grow_from(models.unet(channels=1, filters=8, depth=3), deeper)



def test_bfloat16_computes_the_inner_layers_in_bfloat16_and_keeps_the_ends_float32():
    keras.utils.set_random_seed(0)  # the error bound below holds for these weights, not for every draw
    grey, colour = models.unet(filters=4, depth=2, blocks=1), models.unet(channels=3, filters=4, depth=2, blocks=1)
    for model, channels in ((grey, 1), (models.mean_of([colour, grey]), 3), (models.luma_blend(colour, grey, 0.5, 1.25), 3)):
        fast = models.computing_in(model, "bfloat16")
        inputs = {"image": image(channels=channels), "sigma": np.full((2, 1), 0.1, np.float32)}
        exact, approximate = np.asarray(model(inputs)), fast(inputs)
        assert np.asarray(approximate).dtype == np.float32
        assert np.abs(np.asarray(approximate) - exact).max() < 0.02  # bfloat16 keeps 8 bits of mantissa
        assert not np.array_equal(np.asarray(approximate), exact)
        dtypes = {layer.name: layer.compute_dtype for layer in _all_layers(fast)}
        assert dtypes["down0_conv0"] == dtypes["upsample0"] == dtypes["bottleneck_conv0"] == "bfloat16"
        assert dtypes["skip0"] == dtypes["down0_relu"] == "bfloat16"  # no casts between the inner layers
        # the first and last convolutions see the image and make the noise estimate: full precision
        assert dtypes["head"] == dtypes["tail"] == dtypes["residual"] == dtypes["with_noise_map"] == "float32"
    assert models.computing_in(grey, "float32") is grey
    with pytest.raises(ValueError, match="unknown precision"):
        models.computing_in(grey, "float16")


def test_a_luma_blend_keeps_the_colour_models_chroma_and_mixes_the_luma():
    # Members with known outputs: the colour one returns its input, the grey one the level it is told.
    image_in, sigma_in = keras.Input((None, None, 3), name="image"), keras.Input((1,), name="sigma")
    colour = keras.Model([image_in, sigma_in], layers.Identity()(image_in))
    grey_in = keras.Input((None, None, 1), name="image")
    grey = keras.Model([grey_in, sigma_in], models.NoiseLevelMap()(grey_in, sigma_in))
    blend = models.luma_blend(colour, grey, weight=0.25, level=2.0)
    images = image(channels=3)
    got = np.asarray(blend({"image": images, "sigma": np.full((2, 1), 0.1, np.float32)}))
    weights = np.float32(models.LUMA)
    np.testing.assert_allclose(got - images, np.broadcast_to(got[..., :1] - images[..., :1], got.shape), atol=1e-6)
    np.testing.assert_allclose(got @ weights, 0.75 * (images @ weights) + 0.25 * 0.2, atol=1e-6)
    with pytest.raises(ValueError, match="1-channel member"):
        models.luma_blend(colour, colour, 0.5)
    with pytest.raises(ValueError, match="weight in"):
        models.luma_blend(colour, grey, 1.5)


def _all_layers(model):
    for layer in model.layers:
        yield from _all_layers(layer) if hasattr(layer, "layers") else [layer]
