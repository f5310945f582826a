"""Train a denoising autoencoder with Keras ``fit``: checkpoints, resume, best model, manifest.

A run keeps its state in ``<out>.run/``: ``checkpoint.keras`` (model and optimizer, written every
epoch and on Ctrl-C), ``state.json`` (the options, the epoch reached, the best validation PSNR),
``history.json``, ``loss.png`` and ``comparison.png``. ``--resume`` continues from there with the
same epoch count and optimizer state. The best model (by validation PSNR) goes to ``<out>``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import keras
import numpy as np
from keras import ops

from denoise.data import DataOptions

LOSSES = ("mse", "l1", "bce")


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    """Everything that defines a training run; saved in the run folder and the manifest."""

    data: DataOptions
    out: str
    arch: str = "unet"
    model_args: dict = dataclasses.field(default_factory=dict)
    epochs: int = 20
    steps_per_epoch: int | None = None  # None: one pass over the training images
    loss: str = "mse"
    learning_rate: float = 1e-3
    schedule: str = "cosine"  # cosine decay to 1 % over all epochs, or constant
    early_stopping: int = 0  # patience in epochs; 0 disables
    reduce_on_plateau: int = 0  # patience in epochs; 0 disables
    logdir: str | None = None
    strategy: str = "auto"
    resume: bool = False
    command: str = ""
    name: str | None = None  # the registry name, when the output goes to a manifest


def run_dir(out: str) -> Path:
    return Path(f"{out}.run")


@keras.saving.register_keras_serializable(package="denoise")
def psnr(y_true, y_pred):
    """PSNR in dB on outputs rounded to 8 bits, as the benchmarks measure it."""
    y_pred = ops.round(ops.clip(y_pred, 0.0, 1.0) * 255.0) / 255.0
    mse = ops.mean(ops.square(y_true - y_pred), axis=(1, 2, 3))
    return ops.mean(-10.0 * ops.log(ops.maximum(mse, 1e-10)) / math.log(10.0))


def _loss(name: str):
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
    return {"mse": "mean_squared_error", "l1": "mean_absolute_error", "bce": "binary_crossentropy"}[name]


def _strategy(name: str):
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name != "auto":
        raise ValueError(f"unknown strategy {name!r}; choose auto, mirrored or multiworker")
    gpus = tf.config.list_logical_devices("GPU")
    return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()


def train(options: TrainOptions, log=print) -> dict:
    """Train as ``options`` say; return the summary (best validation PSNR, epochs, seconds)."""
    import tensorflow as tf

    from denoise import data, models, registry

    keras.utils.set_random_seed(options.data.seed)
    folder = run_dir(options.out)
    folder.mkdir(parents=True, exist_ok=True)
    state_path = folder / "state.json"
    state = {"epoch": 0, "best_psnr": -1.0, "seconds": 0.0}
    if options.resume and state_path.exists():
        state.update(json.loads(state_path.read_text())["state"])

    train_images, held = data.clean_images(options.data.source, options.data.channels, options.data.data_dir)
    if options.data.validation:
        val_images = data.clean_images(options.data.validation, options.data.channels, options.data.data_dir)[0]
    elif held is None:
        train_images, val_images = data.split_files(train_images)
    else:
        val_images = held

    with _strategy(options.strategy).scope():
        checkpoint = folder / "checkpoint.keras"
        if options.resume and checkpoint.exists():
            model = keras.saving.load_model(checkpoint)
            log(f"resuming {checkpoint} at epoch {state['epoch']}")
        else:
            model = models.build(options.arch, channels=options.data.channels, **options.model_args)
            model.compile(
                optimizer=keras.optimizers.Adam(_learning_rate(options, len(train_images))),
                loss=_loss(options.loss),
                metrics=[psnr],
            )
    with_sigma = len(model.inputs) > 1
    multiple = registry.size_multiple(model)
    steps = options.steps_per_epoch or max(1, len(train_images) // options.data.batch_size)
    train_set = data.training_dataset(train_images, options.data, with_sigma, start_step=state["epoch"] * steps)
    if model.inputs[0].shape[1] is not None:  # fixed-size models (dense) train on whole images
        multiple = 1
    val_set = data.validation_dataset(val_images, options.data, with_sigma, multiple)

    callbacks = [_checkpointer(options, folder, state, log)]
    if options.early_stopping:
        callbacks.append(keras.callbacks.EarlyStopping("val_psnr", patience=options.early_stopping, mode="max"))
    if options.reduce_on_plateau:
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau("val_psnr", factor=0.5, patience=options.reduce_on_plateau, mode="max")
        )
    if options.logdir:
        callbacks.append(keras.callbacks.TensorBoard(options.logdir))

    started = time.time()
    try:
        model.fit(
            train_set,
            epochs=options.epochs,
            initial_epoch=state["epoch"],
            steps_per_epoch=steps,
            validation_data=val_set,
            callbacks=callbacks,
            verbose=2 if not sys.stdout.isatty() else 1,
        )
    except KeyboardInterrupt:
        model.save(checkpoint)
        callbacks[0].save_state()
        log(f"interrupted: checkpoint saved in {folder}; rerun with --resume to continue")
        raise
    _figures(folder, val_set, model)
    return {**_summary(state, model), "seconds_this_run": round(time.time() - started, 1)}


def _summary(state: dict, model) -> dict:
    return {
        "best_val_psnr": round(state["best_psnr"], 3),
        "epochs": state["epoch"],
        "seconds": round(state["seconds"], 1),
        "parameters": int(model.count_params()),
    }


def _learning_rate(options: TrainOptions, images: int):
    import keras

    if options.schedule == "constant":
        return options.learning_rate
    if options.schedule != "cosine":
        raise ValueError(f"unknown schedule {options.schedule!r}; choose cosine or constant")
    steps = options.steps_per_epoch or max(1, images // options.data.batch_size)
    return keras.optimizers.schedules.CosineDecay(options.learning_rate, options.epochs * steps, alpha=0.01)


def _checkpointer(options: TrainOptions, folder: Path, state: dict, log):
    """A Keras callback that saves the checkpoint and state each epoch, the best model to ``out``."""
    from denoise import registry

    class Checkpointer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epoch_started = time.time()
            history_path = folder / "history.json"
            resumed = options.resume and history_path.exists()
            self.history = json.loads(history_path.read_text()) if resumed else []

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch_started = time.time()

        def on_epoch_end(self, epoch, logs=None):
            state["epoch"] = epoch + 1
            state["seconds"] += time.time() - self.epoch_started
            record = {key: float(value) for key, value in (logs or {}).items()}
            record.update(epoch=epoch + 1, seconds=round(state["seconds"], 1))
            self.history.append(record)
            val = record.get("val_psnr", -1.0)
            if val > state["best_psnr"]:
                state["best_psnr"] = val
                _save_inference_model(self.model, Path(options.out))
                if options.name:
                    registry.record_training(options, _summary(state, self.model))
            self.model.save(folder / "checkpoint.keras")
            self.save_state()
            log(f"epoch {epoch + 1}: val_psnr {val:.2f} dB (best {state['best_psnr']:.2f})")

        def save_state(self):
            _write_json(folder / "state.json", {"options": dataclasses.asdict(options), "state": state})
            _write_json(folder / "history.json", self.history)
            _loss_curve(folder / "loss.png", self.history)

    return Checkpointer()


def _write_json(path: Path, value) -> None:
    from denoise.io import write_atomic

    write_atomic(path, (json.dumps(value, indent=2, default=str) + "\n").encode())


def _save_inference_model(model, out: Path) -> None:
    """Save the model without its optimizer: smaller, and what ``denoise run`` needs."""
    import keras

    out.parent.mkdir(parents=True, exist_ok=True)
    clean = keras.models.clone_model(model)
    clean.set_weights(model.get_weights())
    temporary = out.with_name(f".{out.name}.tmp.keras")
    clean.save(temporary)
    temporary.replace(out)


def _loss_curve(path: Path, history: list[dict]) -> None:
    if not history:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (loss_axis, psnr_axis) = plt.subplots(1, 2, figsize=(9, 3.5))
    epochs = [row["epoch"] for row in history]
    for key, axis in (("loss", loss_axis), ("psnr", psnr_axis)):
        axis.plot(epochs, [row.get(key) for row in history], label="train")
        axis.plot(epochs, [row.get(f"val_{key}") for row in history], label="validation")
        axis.set_xlabel("epoch")
        axis.set_ylabel(key if key == "loss" else "PSNR (dB)")
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _figures(folder: Path, val_set, model, count: int = 8) -> None:
    """The tutorial's figure: rows of clean, noisy and denoised validation images."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [[], [], []]
    for inputs, clean in val_set.unbatch().take(count):
        noisy = inputs["image"] if isinstance(inputs, dict) else inputs
        batch = {key: value[None] for key, value in inputs.items()} if isinstance(inputs, dict) else noisy[None]
        rows[0].append(clean.numpy())
        rows[1].append(noisy.numpy())
        rows[2].append(np.asarray(model(batch, training=False))[0])
    comparison_grid(folder / "comparison.png", rows, ("clean", "noisy", "denoised"))


def comparison_grid(path: Path, rows: list[list[np.ndarray]], labels) -> None:
    """Save a grid of images (values in [0, 1]) with one labelled row per list."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = max(len(row) for row in rows)
    figure, axes = plt.subplots(len(rows), columns, figsize=(1.6 * columns, 1.7 * len(rows)), squeeze=False)
    for row_index, (row, label) in enumerate(zip(rows, labels)):
        for column in range(columns):
            axis = axes[row_index][column]
            axis.set_axis_off()
            if column < len(row):
                image = np.clip(row[column], 0, 1)
                axis.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1)
        axes[row_index][0].set_title(label, loc="left", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
