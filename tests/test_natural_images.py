"""train_scripts/natural_images.py: the training stages it runs and which model it makes the
colour default when it ships one."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "train_scripts"))
import natural_images  # noqa: E402
from denoise import registry  # noqa: E402


def test_stage_two_starts_from_stage_one_with_its_own_options():
    first, second, third = natural_images.train_commands("gray", Path("data"), Path("weights/gray.keras"))[:3]
    assert first[first.index("--out") + 1] == "weights/gray.keras"
    assert second[second.index("--init-from") + 1] == "weights/gray.keras.run/checkpoint.keras"
    assert second[second.index("--out") + 1] == "weights/gray.keras.run/stage2.keras"
    for flag, value in zip(natural_images.STAGE2[::2], natural_images.STAGE2[1::2]):
        assert second.count(flag) == 1 and second[second.index(flag) + 1] == value  # replaced, not repeated
    assert [word for word in first if word not in ("--name", "gray")][:8] == second[:8]  # same data and model
    assert third[third.index("--init-from") + 1] == "weights/gray.keras.run/stage2.keras.run/checkpoint.keras"
    assert third.count("--lr") == 1 and third[third.index("--lr") + 1] == "1e-4"


def test_gray_fourth_stage_trains_on_the_photos_named_by_data_set():
    fourth = natural_images.train_commands("gray", Path("data"), Path("weights/gray.keras"))[3]
    assert fourth.count("--data") == 1 and fourth[fourth.index("--data") + 1] == str(Path("data") / "bsds400_color")
    assert fourth[fourth.index("--channels") + 1] == "1" and fourth[fourth.index("--patch-size") + 1] == "256"
    assert fourth[fourth.index("--val-data") + 1] == str(Path("data") / "set12")
    assert fourth[fourth.index("--init-from") + 1] == "weights/gray.keras.run/stage3.keras.run/checkpoint.keras"


def test_color_has_later_stages_on_downscaled_photos_each_starting_from_the_one_before():
    commands = natural_images.train_commands("color", Path("data"), Path("weights/color.keras"))
    third, fourth = commands[2:4]
    assert third[third.index("--init-from") + 1] == "weights/color.keras.run/stage2.keras.run/checkpoint.keras"
    assert third[third.index("--out") + 1] == "weights/color.keras.run/stage3.keras"
    assert third[third.index("--downscale") + 1] == "2" and "--downscale" not in commands[1]
    assert third[third.index("--patch-size") + 1] == "128"
    assert fourth[fourth.index("--init-from") + 1] == "weights/color.keras.run/stage3.keras.run/checkpoint.keras"
    assert fourth[fourth.index("--downscale") + 1] == "2" and fourth[fourth.index("--lr") + 1] == "1e-4"
    assert natural_images.stage_outputs(Path("w/color.keras"), "color")[3] == Path("w/color.keras.run/stage4.keras")


def entries(color_psnr: float, gray_channelwise_psnr: float) -> list[dict]:
    return [
        {"name": "fmnist-conv", "default_for": []},
        {"name": "gray", "default_for": ["gray"], "metrics": {"mcmaster18_channelwise_psnr_sigma25": gray_channelwise_psnr}},
        {"name": "color", "default_for": ["color"], "metrics": {"mcmaster18_psnr_sigma25": color_psnr}},
    ]


def test_colour_images_go_to_whichever_measures_better():
    models = entries(color_psnr=30.61, gray_channelwise_psnr=30.98)
    natural_images._assign_defaults(models)
    assert [model["default_for"] for model in models] == [[], ["gray", "color"], []]
    assert "30.61 dB against 30.98" in models[2]["note"]

    models = entries(color_psnr=31.20, gray_channelwise_psnr=30.98)
    natural_images._assign_defaults(models)
    assert [model["default_for"] for model in models] == [[], ["gray"], ["color"]]
    assert "note" not in models[2]


def test_a_mean_that_measures_best_becomes_the_colour_default():
    models = [*entries(color_psnr=30.89, gray_channelwise_psnr=30.99),
              {"name": "color+gray", "members": ["color", "gray"], "default_for": [],
               "metrics": {"mcmaster18_psnr_sigma25": 31.65}}]
    natural_images._assign_defaults(models)
    assert [model["default_for"] for model in models] == [[], ["gray"], [], ["color"]]
    assert "30.89 dB against 31.65 for color+gray" in models[2]["note"] and "note" not in models[3]


def test_gpu_stages_follow_the_cpu_stages_each_from_the_best_model_before():
    commands = natural_images.train_commands("gray", Path("data"), Path("weights/gray.keras"))
    fifth, sixth = commands[4:]
    assert fifth[:3] == ["python", natural_images.GPU_SCRIPT, "weights/gray.keras.run/stage4.keras"]
    assert fifth[fifth.index("--out") + 1] == "weights/gray.keras.run/stage5.keras"
    assert sixth[2] == "weights/gray.keras.run/stage5.keras"
    assert fifth[fifth.index("--data") + 1] == str(Path("data") / "bsds400_color")
    assert fifth[fifth.index("--val-data") + 1] == str(Path("data") / "set12")
    assert fifth[fifth.index("--channels") + 1] == "1"
    color = natural_images.train_commands("color", Path("data"), Path("weights/color.keras"))[4]
    assert color[color.index("--downscale") + 1] == "2" and color[color.index("--channels") + 1] == "3"
    assert natural_images.stage_outputs(Path("w/gray.keras"), "gray")[-1] == Path("w/gray.keras.run/stage6.keras")


def test_gray_large_repeats_grays_stages_then_grows_its_last_model():
    gray = natural_images.train_commands("gray", Path("data"), Path("weights/gray.keras"))
    large = natural_images.train_commands("gray-large", Path("data"), Path("weights/gray-large.keras"))
    assert large[:-1] == gray  # one command rebuilds it from scratch
    grow = large[-1]
    assert grow[:3] == ["python", natural_images.GPU_SCRIPT, "weights/gray.keras.run/stage6.keras"]
    assert grow[grow.index("--repeats") + 1] == "2"
    assert grow[grow.index("--out") + 1] == "weights/gray-large.keras.run/stage1.keras"
    assert natural_images.stage_outputs(Path("w/gray-large.keras"), "gray-large")[-2:] == [
        Path("w/gray.keras.run/stage6.keras"), Path("w/gray-large.keras.run/stage1.keras")]


def test_grey_images_go_to_the_grey_model_that_measures_best_on_set12():
    models = [*entries(color_psnr=30.89, gray_channelwise_psnr=31.09),
              {"name": "gray-large", "default_for": [],
               "metrics": {"set12_psnr_sigma25": 30.20, "mcmaster18_channelwise_psnr_sigma25": 31.16}},
              {"name": "color+gray", "members": ["color", "gray"], "default_for": [],
               "metrics": {"mcmaster18_psnr_sigma25": 31.74}}]
    models[1]["metrics"]["set12_psnr_sigma25"] = 30.11
    natural_images._assign_defaults(models)
    assert [model["default_for"] for model in models] == [[], [], [], ["gray"], ["color"]]
    assert "note" not in models[3]  # a grey model is never told it is not the colour default

    models[3]["metrics"]["set12_psnr_sigma25"] = 30.0
    natural_images._assign_defaults(models)
    assert [model["default_for"] for model in models] == [[], ["gray"], [], [], ["color"]]


def gpu_log(path: Path, steps: int, last_step: int) -> None:
    history = [{"step": step, "psnr_sigma25": 30.0 + step / 1000} for step in range(0, last_step + 1, 1000)]
    path.write_text(json.dumps({"steps": steps, "best_step": last_step, "minutes": 2.5, "device": "GPU",
                                "history": history}))


def test_a_gpu_stage_counts_as_finished_only_when_its_log_reached_its_last_step(tmp_path):
    model = tmp_path / "stage5.keras"  # not committed: a fresh clone has only the log
    assert not natural_images.gpu_stage_finished(model)  # no log
    gpu_log(tmp_path / "stage5.keras.json", steps=3000, last_step=2000)  # cut short
    assert not natural_images.gpu_stage_finished(model)
    gpu_log(tmp_path / "stage5.keras.json", steps=3000, last_step=3000)
    assert natural_images.gpu_stage_finished(model)
    assert natural_images._stage_record(model) == {"steps": 3000, "device": "GPU", "seconds": 150.0,
                                                   "best_val_psnr": 33.0}


def test_train_stops_at_the_first_gpu_stage_with_its_command_when_there_is_no_gpu(tmp_path, monkeypatch):
    ran = []
    monkeypatch.setattr(natural_images.subprocess, "call", lambda command, **_: ran.append(command) or 0)
    monkeypatch.setattr(natural_images, "_jax_has_gpu", lambda: False)
    with pytest.raises(SystemExit) as stopped:
        natural_images.train("gray", tmp_path / "data", tmp_path / "weights")
    assert [command[0] for command in ran] == ["denoise"] * 4  # the CPU stages ran, each resumed
    assert all(command[-1] == "--resume" for command in ran)
    assert "needs a GPU" in str(stopped.value) and "stage5.keras" in str(stopped.value)


def test_train_skips_finished_gpu_stages_and_names_a_missing_starting_model(tmp_path, monkeypatch):
    ran = []
    monkeypatch.setattr(natural_images.subprocess, "call", lambda command, **_: ran.append(command) or 0)
    monkeypatch.setattr(natural_images, "_jax_has_gpu", lambda: True)
    run = tmp_path / "weights" / "gray.keras.run"
    run.mkdir(parents=True)
    gpu_log(run / "stage5.keras.json", steps=3000, last_step=3000)
    gpu_log(run / "stage6.keras.json", steps=3000, last_step=3000)
    natural_images.train("gray", tmp_path / "data", tmp_path / "weights")
    assert len(ran) == 4  # the CPU stages (resumed); both GPU stages had finished

    (run / "stage6.keras.json").unlink()  # stage 6 to run again, but stage 5's model is not here
    with pytest.raises(SystemExit) as stopped:
        natural_images.train("gray", tmp_path / "data", tmp_path / "weights")
    assert "stage5.keras, which is missing" in str(stopped.value)
    (run / "stage5.keras").write_bytes(b"model")
    natural_images.train("gray", tmp_path / "data", tmp_path / "weights")
    assert ran[-1][1:3] == [str(natural_images.ROOT / natural_images.GPU_SCRIPT), str(run / "stage5.keras")]


def test_a_camera_model_is_fine_tuned_from_its_start_models_shipped_file_on_camera_noise():
    color = natural_images.train_commands("color", Path("data"), Path("weights/color.keras"))
    camera = natural_images.train_commands("color-camera", Path("data"), Path("weights/color-camera.keras"))
    assert camera[:-2] == color  # one command rebuilds it from scratch
    assert camera[-2] == ["python", natural_images.THIS_SCRIPT, "ship", "color", "--datasets", "data"]
    tune = camera[-1]
    assert tune[tune.index("--init-from") + 1] == "weights/color.keras"
    assert tune[tune.index("--out") + 1] == "weights/color-camera.keras.run/stage1.keras"
    assert tune[tune.index("--noise") + 1] == "camera" and tune[tune.index("--channels") + 1] == "3"
    assert tune[tune.index("--val-data") + 1] == str(Path("data") / "mcmaster18")
    grey = natural_images.train_commands("gray-camera", Path("data"), Path("weights/gray-camera.keras"))[-1]
    assert grey[grey.index("--init-from") + 1] == "weights/gray-large.keras"
    assert grey[grey.index("--channels") + 1] == "1" and grey[grey.index("--val-data") + 1] == str(Path("data") / "set12")
    assert natural_images.stage_outputs(Path("w/gray-camera.keras"), "gray-camera")[-2:] == [
        Path("w/gray-large.keras.run/stage1.keras"), Path("w/gray-camera.keras.run/stage1.keras")]


def test_color_photos_is_fine_tuned_on_two_photo_sets_holding_back_a_tenth_of_them():
    tune = natural_images.train_commands("color-photos", Path("data"), Path("weights/color-photos.keras"))[-1]
    assert [tune[index + 1] for index, word in enumerate(tune) if word == "--data"] == [
        str(Path("data") / "urban100"), str(Path("data") / "sunhays80")]
    assert "--hold-out" in tune and tune[tune.index("--val-data") + 1] == str(Path("data") / "mcmaster18")
    assert tune[tune.index("--init-from") + 1] == "weights/color.keras"
    assert tune[tune.index("--noise") + 1] == "gaussian"


def test_train_ships_the_start_model_first_only_when_it_is_not_shipped(tmp_path, monkeypatch):
    ran = []
    monkeypatch.setattr(natural_images.subprocess, "call", lambda command, **_: ran.append(command) or 0)
    weights = tmp_path / "weights"
    run = weights / "color.keras.run"
    run.mkdir(parents=True)
    gpu_log(run / "stage5.keras.json", steps=3000, last_step=3000)
    natural_images.train("color-camera", tmp_path / "data", weights)
    assert [command[1] for command in ran[-2:]] == [str(natural_images.ROOT / natural_images.THIS_SCRIPT), "train"]
    assert ran[-2][2:4] == ["ship", "color"]

    ran.clear()
    (weights / "color.keras").write_bytes(b"model")
    (weights / "manifest.json").write_text(json.dumps({"models": [{"name": "color", "file": "color.keras", "sha256": "0" * 64}]}))
    natural_images.train("color-camera", tmp_path / "data", weights)
    assert [command[1] for command in ran] == ["train"]  # the fine-tuning alone: color's stages are done


def test_the_camera_models_serve_a_cameras_noise_and_never_the_gaussian_defaults():
    models = [*entries(color_psnr=30.89, gray_channelwise_psnr=31.09),
              {"name": "gray-camera", "default_for": [], "metrics": {"set12_psnr_sigma25": 40.0}},
              {"name": "color-camera", "default_for": ["color"], "metrics": {"mcmaster18_psnr_sigma25": 40.0}}]
    natural_images._assign_defaults(models)
    assert [model["default_for"] for model in models] == [[], ["gray", "color"], [], ["gray-camera"],
                                                          ["color-camera"]]


def test_measure_updates_a_shipped_models_metrics_and_leaves_its_file(tmp_path, monkeypatch):
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "color-camera.keras").write_bytes(b"model")
    digest = registry.sha256_of(weights / "color-camera.keras")
    entry = {"name": "color-camera", "file": "color-camera.keras", "sha256": digest, "default_for": [],
             "metrics": {"mcmaster18_psnr_camera200": 32.48}}
    (weights / "manifest.json").write_text(json.dumps({"models": [entry]}))
    measured = []
    monkeypatch.setattr(natural_images, "_measure_camera",
                        lambda model, folder, prefix: measured.append((model, folder, prefix)) or
                        {f"{prefix}_psnr_camera200": 32.79})
    natural_images.remeasure("color-camera", tmp_path / "data", weights)
    assert measured == [(weights / "color-camera.keras", tmp_path / "data" / "mcmaster18", "mcmaster18")]
    saved = json.loads((weights / "manifest.json").read_text())["models"][0]
    assert saved["metrics"] == {"mcmaster18_psnr_camera200": 32.79} and saved["default_for"] == ["color-camera"]
    assert (weights / "color-camera.keras").read_bytes() == b"model"
    (weights / "color-camera.keras").write_bytes(b"replaced")
    with pytest.raises(SystemExit, match="does not match"):
        natural_images.remeasure("color-camera", tmp_path / "data", weights)
