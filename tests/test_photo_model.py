"""train_scripts/camera_pairs.py and camera_finetune.py, which make `color-photo` and `gray-photo`:
pairs from generated photos, and a tiny U-Net fine-tuned on them that resumes where it stopped."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from denoise import calibrate

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "train_scripts"))
import camera_pairs  # noqa: E402


def write_photos(root: Path) -> None:
    """Three tiny 'data sets' of smooth colour pictures, named as camera_pairs.py expects."""
    rng = np.random.default_rng(0)
    for name, count, size in (("urban100", 12, 160), ("sunhays80", 12, 160), ("bsds400_color", 3, 200)):
        (root / name).mkdir(parents=True)
        for index in range(count):
            coarse = rng.uniform(0, 255, (size // 16 + 1, size // 16 + 1, 3))
            picture = np.kron(coarse, np.ones((16, 16, 1)))[:size, :size]
            Image.fromarray(picture.astype(np.uint8)).save(root / name / f"{name}-{index}.png")


def test_pairs_hold_back_the_validation_photos_and_store_the_level_run_reads(tmp_path):
    write_photos(tmp_path)
    train, held = camera_pairs.sources(tmp_path, False), camera_pairs.sources(tmp_path, True)
    assert held and not set(train) & set(held) and not any("bsds" in path for path in held)
    noisy, reference, level, kind = camera_pairs.one_pair((train[0], 7, 64, False, False, False))
    assert noisy.shape == reference.shape == (64, 64, 3) and noisy.dtype == np.uint8
    # read on the whole made image, whose centre the pair is: about what the crop itself reads
    assert level > 0 and abs(np.log(level / calibrate.level_for(noisy.astype(np.float32) / 255.0))) < 0.3
    assert kind in ("camera", "blurred", "wjpeg") and np.abs(noisy.astype(int) - reference).mean() > 0.5
    again = camera_pairs.one_pair((train[0], 7, 64, False, False, False))
    np.testing.assert_array_equal(again[0], noisy)  # the seed decides the pair
    clean, target, _, kind = camera_pairs.one_pair((train[0], 7, 64, True, False, False))
    assert kind == "clean" and np.array_equal(clean, target)


def test_grey_pairs_are_the_luma_of_the_colour_ones_with_the_level_read_on_grey(tmp_path):
    write_photos(tmp_path)
    path = camera_pairs.sources(tmp_path, False)[0]
    for seed in range(4):
        colour = camera_pairs.one_pair((path, seed, 64, True, False, False))
        noisy, reference, level, kind = camera_pairs.one_pair((path, seed, 64, True, True, False))
        assert noisy.shape == (64, 64, 1) and kind == "clean" and np.array_equal(noisy, reference)
        luma = np.asarray(Image.fromarray(colour[0]).convert("L"))  # what a user's grey conversion gives
        assert np.abs(luma.astype(int) - noisy[..., 0]).max() <= 1
    noisy, reference, level, kind = camera_pairs.one_pair((path, 5, 64, False, True, False))
    assert noisy.shape == reference.shape == (64, 64, 1) and np.abs(noisy.astype(int) - reference).mean() > 0.5
    assert level > 0 and abs(np.log(level / calibrate.level_for(noisy.astype(np.float32) / 255.0))) < 0.3  # read on grey


def test_finetune_writes_the_best_model_and_resumes(tmp_path, tiny_models):
    import keras

    write_photos(tmp_path / "data")
    script = ROOT / "train_scripts"
    for name, extra in (("train", ["--count", "12"]), ("val", ["--count", "4", "--held-back"])):
        subprocess.run([sys.executable, str(script / "camera_pairs.py"), "--data", str(tmp_path / "data"), *extra,
                        "--size", "64", "--workers", "1", "--out", str(tmp_path / f"{name}.npz")], check=True)
    out = tmp_path / "run" / "photo.keras"
    command = [sys.executable, str(script / "camera_finetune.py"), str(tiny_models["unet-color"]),
               "--train", str(tmp_path / "train.npz"), "--val", str(tmp_path / "val.npz"), "--batch-size", "2",
               "--lr", "1e-2", "--warmup", "1", "--val-every", "2", "--out", str(out)]
    subprocess.run([*command, "--steps", "4"], check=True)
    log = json.loads(out.with_suffix(".json").read_text())
    assert [point["step"] for point in log["curve"]] == [0, 2, 4]
    assert out.with_suffix(".run").joinpath("checkpoint.keras").exists()
    assert log["best"]["step"] > 0 and log["best"]["val_psnr"] > log["curve"][0]["val_psnr"]  # it learned
    model = keras.saving.load_model(out, compile=False)
    assert model.predict({"image": np.zeros((1, 32, 32, 3)), "sigma": np.zeros((1, 1))}, verbose=0).shape == (1, 32, 32, 3)
    subprocess.run([*command, "--steps", "6"], check=True)  # resumes at step 4
    assert [point["step"] for point in json.loads(out.with_suffix(".json").read_text())["curve"]] == [0, 2, 4, 6]


def test_a_rebuild_makes_each_missing_pair_file_once_and_chains_the_stages(tmp_path):
    import photo_model

    (tmp_path / "clean.npz").touch()  # made by an earlier, stopped rebuild
    for name, variant in photo_model.VARIANTS.items():
        commands = photo_model.commands(name, Path("data"), tmp_path)
        made = [command[command.index("--out") + 1] for command in commands if "camera_pairs.py" in command[1]]
        assert str(tmp_path / "clean.npz") not in made and len(made) == len(set(made)) == len(variant.pairs) - 1
        stages = [command for command in commands if "camera_finetune.py" in command[1]]
        assert len(stages) == len(variant.stages) and stages[0][2] == variant.start
        for number, stage in enumerate(stages, start=1):
            assert stage[stage.index("--out") + 1] == photo_model.stage_path(name, number)
            used = stage[stage.index("--train") + 1:stage.index("--val") + 2]
            assert all(path in made + [str(tmp_path / "clean.npz")] for path in used if path != "--val")
        for earlier, later in zip(stages, stages[1:]):  # each stage goes on from the best of the one before
            assert later[2] == earlier[earlier.index("--out") + 1]


def test_shipping_color_photo_makes_its_luma_blend_the_default_for_photos(tmp_path, registry_dir, tiny_models, monkeypatch):
    import photo_model

    from denoise import registry

    manifest = json.loads((registry_dir / "manifest.json").read_text())
    grey = {**manifest["models"][0], "name": "gray-large", "command": "make gray-large", "parameters": 7}
    manifest["models"].append(grey)
    (registry_dir / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setattr(photo_model, "ROOT", registry_dir.parent)
    for number in (1, 2):
        stage = registry_dir.parent / photo_model.stage_path("color-photo", number)
        stage.parent.mkdir(parents=True, exist_ok=True)
        stage.write_bytes(tiny_models["unet-color"].read_bytes())
        curve = [{"step": 0, "val_psnr": 30.0, "seconds": 0}, {"step": 10, "val_psnr": 31.0, "seconds": 5}]
        stage.with_suffix(".json").write_text(json.dumps({"args": {"model": "start"}, "best": curve[1], "curve": curve}))
    for _ in range(2):  # shipping again replaces both entries
        photo_model.ship("color-photo", Path("data"))
    names = [entry["name"] for entry in registry.entries()]
    assert names.count("color-photo") == names.count("color-photo+gray-large") == 1
    blend = registry.find("color-photo+gray-large")
    chosen = photo_model.VARIANTS["color-photo"].blend
    assert blend["members"] == ["color-photo", "gray-large"] and blend["ensemble"] == chosen.ensemble
    assert blend["luma"] == {"weight": chosen.weight, "level": chosen.level}
    assert registry.find("color-photo")["default_for"] == [] and registry.default_name(3, noise="photo") == blend["name"]
    assert registry.load(blend["name"]).passes == 2


def test_edge_preserving_noise_reduction_keeps_the_reference_sharp_and_takes_noise_off_flat_areas():
    step = np.full((64, 64, 3), 60, np.uint8)
    step[:, 32:] = 190
    fixed = {"scale": 1.0, "sharpen": 0.0, "chroma_nr": 0.0, "quality": 95, "demosaic": "bilinear", "tone": 0.0,
             "exposure": 1.0, "shot": 0.01, "read_rel": 0.0, "luma_nr": 1.5, "luma_range": 3.0}

    def pair(**changes):
        noisy, reference, _ = camera_pairs.pipeline.camera_pair(step, np.random.default_rng(3), {**fixed, **changes})
        luma = [image.astype(float) @ camera_pairs.LUMA for image in (noisy, reference)]
        edge = np.abs(np.diff(luma[1][8:-8], axis=1)).max()  # the reference's steepest step
        flat = np.std(luma[0][8:-8, 4:24] - luma[1][8:-8, 4:24])  # the noise left in the dark half
        return edge, flat

    edges, blurred, untouched = pair(luma_edges=True), pair(luma_edges=False), pair(luma_nr=0.0)
    assert edges[0] > 1.5 * blurred[0] and edges[0] > 0.8 * untouched[0]
    assert edges[1] < 0.8 * untouched[1]
