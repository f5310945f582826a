"""The inference pipeline: what the model is told about each image."""

import keras
import numpy as np
from click.testing import CliRunner
from PIL import Image

from conftest import noisy_array, save
from denoise import models
from denoise.cli import main


def test_a_colour_model_is_told_a_grey_image_has_sqrt3_times_the_noise(tmp_path):
    """A grey image runs through a colour model as three identical channels: the same noise in
    each, which a model trained on independent noise per channel sees as sqrt(3) times weaker."""
    image = keras.Input((None, None, 3), name="image")
    sigma = keras.Input((1,), name="sigma")
    told = models.NoiseLevelMap()(image, sigma)  # outputs the sigma it was given, everywhere
    path = tmp_path / "told.keras"
    keras.Model([image, sigma], keras.layers.Concatenate()([told, told, told])).save(path)
    save(tmp_path / "in" / "grey.png", noisy_array(16, 16, 1))
    save(tmp_path / "in" / "colour.png", noisy_array(16, 16, 3))
    result = CliRunner().invoke(main, ["run", str(tmp_path / "in"), str(tmp_path / "out"), "-q", "--sigma", "25",
                                       "--model", str(path)])
    assert result.exit_code == 0, result.output
    assert np.unique(np.asarray(Image.open(tmp_path / "out" / "grey.png"))).tolist() == [round(25 * 3**0.5)]
    assert np.unique(np.asarray(Image.open(tmp_path / "out" / "colour.png"))).tolist() == [25]
