"""`denoise adapt`: a tiny U-Net adapts on generated noisy images, its self-supervised loss falls,
the written model loads and runs, and resume and Ctrl-C keep what they should."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from PIL import Image
from click.testing import CliRunner

from conftest import add_camera_models, grainy_array, noisy_array, save
from denoise import adapt, models, registry
from denoise.cli import main


@pytest.fixture()
def noisy_folder(tmp_path):
    folder = tmp_path / "noisy"
    for index in range(4):
        save(folder / f"{index}.png", noisy_array(32, 32, 1, seed=index))
    return folder


def options(folder, out, **changes) -> adapt.AdaptOptions:
    # Small crops and a high rate: a few steps must move an untrained 4-filter network.
    settings = dict(inputs=(str(folder),), out=str(out), crop=16, batch_size=4, round_steps=2, warmup=1,
                    learning_rate=3e-3, patience=0, max_steps=8, validation_crops=4, minutes=5.0)
    settings.update(changes)
    return adapt.AdaptOptions(**settings)


def test_pair_takes_two_different_pixels_of_each_cell():
    crop = np.arange(8 * 8, dtype=np.float32).reshape(8, 8, 1)
    first, second = adapt.pair(crop, np.random.default_rng(0))
    assert first.shape == second.shape == (4, 4, 1)
    assert np.all(first != second)
    assert np.all(np.floor(first // 8 / 2) == np.arange(4)[:, None, None])  # rows of its own cell
    assert np.all(np.abs(first - second) <= 9)  # neighbours within the 2x2 cell


def test_phases_layer_runs_the_network_on_each_phase(tiny_models):
    network = keras.saving.load_model(tiny_models["unet-gray"])
    wrapped = models.on_phases(network)
    image = np.random.default_rng(0).random((1, 32, 48, 1)).astype(np.float32)
    sigma = np.array([[0.1]], np.float32)
    output = np.asarray(wrapped({"image": image, "sigma": sigma}))
    expected = np.asarray(network({"image": image[:, 1::2, 0::2], "sigma": sigma}))
    np.testing.assert_allclose(output[:, 1::2, 0::2], expected, atol=1e-5)


def test_white_noise_is_not_taken_for_correlated_noise_and_blurred_noise_is():
    from denoise import treatments

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:96, 0:96]
    clean = (0.5 + 0.3 * np.sin(x / 9.0) * np.cos(y / 7.0))[..., None].astype(np.float32)
    white = rng.normal(0, 0.08, clean.shape).astype(np.float32)
    blurred = (white + np.roll(white, 1, 0) + np.roll(white, 1, 1) + np.roll(white, (1, 1), (0, 1))) / 2
    channels = treatments.Channels(1, 1)
    assert not adapt.is_correlated([(clean + white, 20.0, channels)])
    assert adapt.is_correlated([(clean + blurred, 20.0, channels)])


def test_adapting_lowers_the_self_supervised_loss_and_run_uses_the_model(tmp_path, noisy_folder, tiny_models):
    out = tmp_path / "mine" / "mine.keras"
    summary = adapt.adapt(options(noisy_folder, out, init_from=str(tiny_models["unet-gray"])), say=lambda _: None)
    assert summary["adapted"] and summary["steps"] == 8
    assert summary["best_val_loss"] < summary["start_val_loss"]
    entry = registry.find("mine", out.parent)
    assert entry["sha256"] == registry.sha256_of(out)
    assert entry["adaptation"]["validation"][0][1] == pytest.approx(summary["start_val_loss"], rel=1e-6)
    assert len(entry["adaptation"]["validation"]) == 1 + 8 // 2

    result = CliRunner().invoke(main, ["run", str(noisy_folder), str(tmp_path / "clean"), "--model", str(out), "-q"])
    assert result.exit_code == 0, result.output
    listed = CliRunner().invoke(main, ["models"], env={"DENOISE_WEIGHTS": str(out.parent)})
    assert listed.exit_code == 0 and "mine" in listed.output and "adapted" in listed.output
    assert sorted(path.name for path in (tmp_path / "clean").iterdir()) == [f"{index}.png" for index in range(4)]


def test_the_level_told_is_the_one_run_reads(tmp_path, noisy_folder, registry_dir):
    from denoise.engine import Engine
    from denoise.io import read_image
    from denoise.plan import Job
    from denoise.settings import Inference
    from denoise import treatments

    images, _, engine = adapt.prepared_images(options(noisy_folder, tmp_path / "m.keras"), lambda _: None)
    assert engine.inference.model == "unet-gray"  # what run picks for grey images
    path = noisy_folder / "0.png"
    run_image = treatments.prepare(Job(0, path, path), read_image(path), Engine(Inference(), lambda _: None))
    np.testing.assert_array_equal(images[0][0], run_image.pixels)
    assert images[0][1] == run_image.level > 0


def test_bad_files_are_skipped_with_one_line(tmp_path, noisy_folder, tiny_models):
    (noisy_folder / "broken.png").write_bytes(b"not an image")
    lines = []
    summary = adapt.adapt(options(noisy_folder, tmp_path / "m.keras", init_from=str(tiny_models["unet-gray"]),
                                  max_steps=2), say=lines.append)
    assert summary["data"]["images"] == 4
    assert [line for line in lines if "broken.png" in line] == [f"denoise: {noisy_folder / 'broken.png'}: "
                                                                + lines[0].split(": ", 2)[2]]


def _adapt_colour_correlated(tmp_path, tiny_models, monkeypatch, losses: list[float]):
    """Two colour images adapted as correlated noise, the validation losses given: (summary, out)."""
    losses = iter(losses)
    monkeypatch.setattr(adapt, "validation_loss", lambda *args, **kwargs: next(losses))
    folder = tmp_path / "colour"
    for index in range(2):
        save(folder / f"{index}.png", noisy_array(40, 36, 3, seed=index))
    out = tmp_path / "c.keras"
    summary = adapt.adapt(options(folder, out, init_from=str(tiny_models["unet-color"]), correlated="yes",
                                  max_steps=2), say=lambda _: None)
    return summary, out


def test_colour_images_on_a_colour_model_with_correlated_noise(tmp_path, tiny_models, monkeypatch):
    # the start, then better: the adapted model is written
    summary, out = _adapt_colour_correlated(tmp_path, tiny_models, monkeypatch, [1.0, 0.5])
    assert summary["correlated"] and summary["adapted"]
    loaded = registry.load(str(out))
    assert loaded.channels == 3 and loaded.multiple == 2 * registry.size_multiple(
        keras.saving.load_model(tiny_models["unet-color"]))
    result = CliRunner().invoke(main, ["run", str(tmp_path / "colour"), str(tmp_path / "clean"), "--model", str(out), "-q"])
    assert result.exit_code == 0, result.output


def test_resume_continues_to_the_step_cap(tmp_path, noisy_folder, tiny_models):
    out = tmp_path / "m.keras"
    first = adapt.adapt(options(noisy_folder, out, init_from=str(tiny_models["unet-gray"]), max_steps=4),
                        say=lambda _: None)
    assert first["steps"] == 4
    second = adapt.adapt(options(noisy_folder, out, init_from=str(tiny_models["unet-gray"]), max_steps=8,
                                 resume=True), say=lambda _: None)
    assert second["steps"] == 8
    assert second["validation"][: len(first["validation"])] == first["validation"]
    assert second["start_val_loss"] == first["start_val_loss"]


def test_ctrl_c_keeps_the_best_so_far_and_resume_goes_on(tmp_path, noisy_folder, tiny_models):
    out = tmp_path / "m.keras"

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        adapt.adapt(options(noisy_folder, out, init_from=str(tiny_models["unet-gray"])), say=lambda _: None,
                    callbacks=[Interrupt()])
    state = json.loads((adapt.run_dir(str(out)) / "state.json").read_text())["state"]
    assert state["step"] == 4 and state["adapted"]
    best = keras.saving.load_model(out)
    assert registry.find("m", out.parent)["sha256"] == registry.sha256_of(out)
    assert best.count_params() > 0
    resumed = adapt.adapt(options(noisy_folder, out, init_from=str(tiny_models["unet-gray"]), resume=True),
                          say=lambda _: None)
    assert resumed["steps"] == 8


def test_a_model_that_never_improves_is_written_unchanged(tmp_path, noisy_folder, tiny_models, monkeypatch):
    losses = iter([1.0, 2.0, 3.0, 4.0, 5.0])  # the start, then worse at every validation
    monkeypatch.setattr(adapt, "validation_loss", lambda *args, **kwargs: next(losses))
    out = tmp_path / "m.keras"
    summary = adapt.adapt(options(noisy_folder, out, init_from=str(tiny_models["unet-gray"])), say=lambda _: None)
    assert not summary["adapted"] and summary["best_val_loss"] == 1.0 and summary["steps"] == 8
    start = keras.saving.load_model(tiny_models["unet-gray"])
    for before, after in zip(start.get_weights(), keras.saving.load_model(out).get_weights()):
        np.testing.assert_array_equal(before, after)


def test_cli_adapt_writes_the_model_and_prints_a_summary(tmp_path, noisy_folder, tiny_models):
    out = tmp_path / "cli.keras"
    result = CliRunner().invoke(main, ["adapt", str(noisy_folder), "--out", str(out), "--init-from",
                                       str(tiny_models["unet-gray"]), "--max-steps", "2", "-q"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["steps"] >= 2 and out.is_file()
    bad = CliRunner().invoke(main, ["adapt", str(noisy_folder), "--out", str(tmp_path / "x.h5")])
    assert bad.exit_code == 2


def test_grey_and_colour_images_adapt_one_model_the_first_picks(tmp_path, registry_dir):
    folder = tmp_path / "mixed"
    save(folder / "a.png", noisy_array(32, 32, 3, seed=1))
    save(folder / "b.png", noisy_array(32, 32, 1, seed=2))
    out = tmp_path / "m.keras"
    summary = adapt.adapt(options(folder, out, max_steps=2), say=lambda _: None)
    assert summary["init_from"] == "unet-color" and summary["data"]["images"] == 2
    assert registry.load(str(out)).channels == 3


def test_corrected_pairs_have_the_content_of_the_input_and_independent_noise():
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:16, 0:16]
    clean = (x * 0.05 + y * 0.01)[..., None].astype(np.float32)  # neighbours differ in content
    noise = rng.normal(0, 0.1, clean.shape).astype(np.float32)
    source = adapt.Source(clean + noise, 0.1, estimate=clean)
    first, target = adapt.corrected_pair(source.stacked(), np.random.default_rng(1))
    plain_first, plain_target = adapt.pair(clean + noise, np.random.default_rng(1))
    np.testing.assert_array_equal(first, plain_first)
    clean_first, _ = adapt.pair(np.concatenate([clean, clean], -1), np.random.default_rng(1))
    residual = target - clean_first[..., :1]  # the second sub-image's noise alone
    assert abs(float(residual.mean())) < 0.03 and 0.07 < float(residual.std()) < 0.13
    assert float(np.abs(plain_target - target).max()) > 0.04  # plain targets carry the content difference


def test_a_gain_within_the_margin_keeps_the_starting_model(tmp_path, noisy_folder, tiny_models, monkeypatch):
    losses = iter([1.0, 0.99, 0.985, 0.98, 0.97])  # better, but by less than MARGIN_DB
    monkeypatch.setattr(adapt, "validation_loss", lambda *args, **kwargs: next(losses))
    summary = adapt.adapt(options(noisy_folder, tmp_path / "m.keras", init_from=str(tiny_models["unet-gray"])),
                          say=lambda _: None)
    assert not summary["adapted"] and summary["best_val_loss"] == 0.97
    assert registry.find("m", tmp_path)["adaptation"]["adapted"] is False


def test_correlated_noise_not_beaten_keeps_the_start_model_on_the_whole_image(tmp_path, tiny_models, monkeypatch):
    summary, out = _adapt_colour_correlated(tmp_path, tiny_models, monkeypatch, [1.0, 2.0])
    assert not summary["adapted"]
    assert registry.load(str(out)).multiple == registry.load(str(tiny_models["unet-color"])).multiple


def test_photos_with_spread_noise_keep_the_photo_model_run_gives_them(tmp_path, registry_dir):
    # The photo model learned such noise on whole images; adapting on the phases lost to it on CC15.
    add_camera_models(registry_dir, "photo", channels=(3,))
    manifest = json.loads((registry_dir / "manifest.json").read_text())
    manifest["models"][-1]["ensemble"] = 4
    (registry_dir / "manifest.json").write_text(json.dumps(manifest))
    for index in range(2):
        save(tmp_path / "grain" / f"{index}.png", grainy_array(96, 3, 12, 1.0, seed=index))
    out, said = tmp_path / "mine.keras", []
    summary = adapt.adapt(options(tmp_path / "grain", out, init_from="auto"), say=said.append)
    assert summary["init_from"] == "color-photo" and not summary["adapted"] and summary["steps"] == 0
    assert any("--correlated yes" in line for line in said)
    assert registry.load(str(out)).ensemble == 4  # it runs as run ran it
    outputs = {}
    for label, extra in (("defaults", []), ("adapted", ["--model", str(out)])):
        result = CliRunner().invoke(main, ["run", str(tmp_path / "grain"), str(tmp_path / label), "-q", *extra])
        assert result.exit_code == 0, result.output
        outputs[label] = [np.asarray(Image.open(tmp_path / label / f"{index}.png")) for index in range(2)]
    np.testing.assert_array_equal(outputs["defaults"], outputs["adapted"])
    forced = adapt.adapt(options(tmp_path / "grain", tmp_path / "phases.keras", init_from="auto", correlated="yes",
                                 max_steps=2), say=lambda _: None)
    assert forced["correlated"] and forced["steps"] == 2
