"""Train a denoising autoencoder with Keras ``fit``: checkpoints, resume, best model, manifest.

Under ``--strategy multiworker`` the same training runs through :func:`denoise.distributed.fit`,
our own distributed step, because Keras 3's ``fit`` fails with several workers.

A run keeps its state in ``<out>.run/``: ``checkpoint.keras`` (model and optimizer, written every
epoch and on Ctrl-C), ``state.json`` (the options, the epoch reached, the best validation PSNR),
``history.json``, ``loss.png`` and ``comparison.png``. ``--resume`` continues from there with the
same epoch count and optimizer state. The best model (by validation PSNR) goes to ``<out>``,
without its optimizer; with a registry name (or when ``<out>`` is in the registry folder) its
entry is written to the ``manifest.json`` beside it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
from keras import ops

from denoise import distributed
from denoise import models  # noqa: F401  registers the custom layers that checkpoints name
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
    warmup: int = 0  # steps of linear learning-rate warm-up from 0
    early_stopping: int = 0  # patience in epochs; 0 disables
    reduce_on_plateau: int = 0  # patience in epochs; 0 disables
    logdir: str | None = None
    strategy: str = "auto"
    resume: bool = False
    command: str = ""
    name: str | None = None  # the registry name, when the output goes to a manifest
    init_from: str | None = None  # a registry name or .keras file a fresh run starts from (fine-tuning)
    average: float = 0.0  # momentum of a moving average of the weights, validated beside them; 0: none


SCHEDULES = ("cosine", "constant")
STRATEGIES = ("auto", "mirrored", "multiworker")


def check(options: TrainOptions) -> None:
    """Raise ValueError for options that cannot work together, before any data is loaded."""
    if options.loss not in LOSSES:
        raise ValueError(f"unknown loss {options.loss!r}; choose one of {', '.join(LOSSES)}")
    if options.schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {options.schedule!r}; choose one of {', '.join(SCHEDULES)}")
    if options.strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {options.strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if options.reduce_on_plateau and (options.schedule != "constant" or options.warmup):
        raise ValueError("--reduce-lr-on-plateau sets the learning rate itself: use it with --schedule constant "
                         "and no --warmup")
    if options.warmup < 0:
        raise ValueError("--warmup must be 0 or more steps")
    if not 0.0 <= options.average < 1.0:
        raise ValueError("--average must be at least 0 (off) and below 1")
    if options.epochs < 1 or options.data.batch_size < 1 or (options.steps_per_epoch or 1) < 1:
        raise ValueError("epochs, batch size and steps per epoch must be at least 1")
    if options.data.patch_size is not None and options.data.patch_size < 4:
        raise ValueError("the patch size must be at least 4")
    if options.logdir and not _has_tensorboard():
        raise ValueError("--logdir needs the tensorboard package (pip install tensorboard)")
    if not str(options.out).endswith(".keras"):
        raise ValueError(f"--out {options.out}: the model file name must end in .keras")


def _has_tensorboard() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


def run_dir(out: str) -> Path:
    return Path(f"{out}.run")


@keras.saving.register_keras_serializable(package="denoise")
def psnr(y_true, y_pred):
    """PSNR in dB on outputs rounded to 8 bits, as the benchmarks measure it."""
    y_pred = ops.round(ops.clip(y_pred, 0.0, 1.0) * 255.0) / 255.0
    mse = ops.mean(ops.square(y_true - y_pred), axis=(1, 2, 3))
    # Per image: Keras averages per-sample values itself (a scalar here is averaged wrongly).
    return -10.0 * ops.log(ops.maximum(mse, 1e-10)) / math.log(10.0)


def _loss(name: str):
    return {"mse": "mean_squared_error", "l1": "mean_absolute_error", "bce": "binary_crossentropy"}[name]


def _strategy(name: str):
    """The tf.distribute strategy: mirrored over the local devices, multi-worker over machines
    (TF_CONFIG), and for auto mirrored when there are several GPUs, else the default one."""
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()


def _is_chief(strategy) -> bool:
    """Whether this worker writes the files: all of them but the first of a multi-worker run
    train in step and would only overwrite its checkpoint."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0)


def train(options: TrainOptions, log=print, callbacks=()) -> dict:
    """Train as ``options`` say; return the summary (best validation PSNR, epochs, seconds).

    ``callbacks`` are extra Keras callbacks. Ctrl-C saves the checkpoint and re-raises
    KeyboardInterrupt; ``options.resume`` then continues from it.
    """
    from denoise import data, registry

    check(options)
    source, options = _init_source(options)
    strategy = _strategy(options.strategy)  # first: multi-worker must set TensorFlow up itself
    keras.utils.set_random_seed(options.data.seed)
    folder = run_dir(options.out)
    state = {"epoch": 0, "best_psnr": -1.0, "seconds": 0.0}
    if options.resume and (folder / "state.json").exists():
        saved = json.loads((folder / "state.json").read_text())
        state.update(saved["state"])
        for key, (before, now) in _changed(saved.get("options", {}), dataclasses.asdict(options)).items():
            log(f"warning: --resume with {key} {now!r}, the saved run had {before!r}")

    train_images, val_images = _images(options.data)
    patch = options.data.patch_size or data.natural_patch(train_images)
    checkpoint = folder / "checkpoint.keras"
    with strategy.scope():
        if options.resume and checkpoint.exists():
            model = keras.saving.load_model(checkpoint)
            log(f"resuming {checkpoint} at epoch {state['epoch']} of {options.epochs}")
        else:
            model = _new_model(options, patch, len(train_images), source)
    log(f"{model.name}: {model.count_params():,} parameters, {strategy.num_replicas_in_sync} replica(s) "
        f"({type(strategy).__name__}), {len(train_images)} training and "
        f"{min(len(val_images), options.data.validation_count)} validation images")

    fixed = model.inputs[0].shape[1]  # the dense model's one input size, else None
    multiple = registry.size_multiple(model)
    patch = fixed or -(-patch // multiple) * multiple
    data_options = dataclasses.replace(options.data, patch_size=patch)
    with_sigma = len(model.inputs) > 1
    steps = _steps(options, len(train_images))
    train_set = data.training_dataset(train_images, data_options, with_sigma, start_step=state["epoch"] * steps)
    val_set = data.validation_dataset(val_images, data_options, with_sigma, multiple, size=fixed)

    chief = _is_chief(strategy)
    if not chief:
        folder = Path(tempfile.mkdtemp(prefix="denoise-worker-"))
        resolver = strategy.cluster_resolver
        log(f"{resolver.task_type} {resolver.task_id}: checkpoints in {folder} (the chief writes {options.out})")
    folder.mkdir(parents=True, exist_ok=True)
    checkpointer = _checkpointer(options, folder, state, log, val_set, write_outputs=chief)
    logdir = options.logdir if chief or not options.logdir else str(folder / "logs")
    fit_arguments = dict(
        epochs=options.epochs,
        initial_epoch=state["epoch"],
        steps_per_epoch=steps,
        callbacks=[checkpointer, *_keras_callbacks(options, logdir), *callbacks],
        verbose=2 if not sys.stdout.isatty() else 1,
    )
    started = time.time()
    try:
        if distributed.is_multi_worker(strategy):  # Keras's fit fails there: keras-team/keras#20585
            distributed.fit(model, strategy, train_set, loss=keras.losses.get(_loss(options.loss)), metric=psnr,
                            batch_size=options.data.batch_size, **fit_arguments)
        else:
            model.fit(train_set, shuffle=False, **fit_arguments)  # the tf.data pipeline shuffles
    except KeyboardInterrupt:
        _save_atomic(model, folder / "checkpoint.keras")
        checkpointer.save_state()
        log(f"interrupted: checkpoint saved in {folder}; rerun with --resume to continue")
        raise
    if chief:
        _figures(folder, val_set, model)
    return {**_summary(state, model), "seconds_this_run": round(time.time() - started, 1)}


def _changed(saved: dict, now: dict, prefix: str = "") -> dict:
    """Options that differ from the saved run's, by dotted name (epochs and bookkeeping aside)."""
    changed = {}
    for key, value in now.items():
        if key in ("epochs", "resume", "command") or key not in saved:
            continue
        if isinstance(value, dict) and isinstance(saved[key], dict) and key != "model_args":
            changed.update(_changed(saved[key], value, f"{prefix}{key}."))
        elif json.loads(json.dumps(value, default=str)) != saved[key]:
            changed[prefix + key] = (saved[key], value)
    return changed


def _images(options: DataOptions):
    """``(train, validation)`` clean images, never sharing one."""
    from denoise import data

    train_images, held = data.clean_images(options.source, options.channels, options.data_dir)
    if options.validation:
        val_images = data.validation_images(options.validation, options.channels, options.data_dir)
        if options.hold_out:
            if held is not None or not isinstance(val_images, list):
                raise ValueError("--hold-out: only folders hold out a tenth, beside a folder of validation images")
            train_images, held = data.split_files(train_images)
            val_images = [*held, *val_images]  # the held-back tenth first: --val-count keeps it whole
        return data.without(train_images, val_images), val_images
    if held is None:
        return data.split_files(train_images)
    return train_images, held


def _init_source(options: TrainOptions):
    """The model ``--init-from`` names (None without it), and ``options`` with the channels and
    unet arguments left unset taken from it: fine-tuning a shipped model needs none of them."""
    from denoise import models, registry

    channels = options.data.channels
    if not options.init_from:
        return None, dataclasses.replace(options, data=dataclasses.replace(options.data, channels=channels or 1))
    members = (registry.find(options.init_from) or {}).get("members")
    if members:
        raise ValueError(f"--init-from {options.init_from}: the mean of {', '.join(members)} has no weights of its "
                         "own; start from one of them")
    try:
        loaded = registry.load(options.init_from)
    except registry.WeightsError as error:
        raise ValueError(f"--init-from {error}") from None
    model_args = dict(options.model_args)
    if options.arch == "unet":
        try:
            found = models.unet_args(loaded.model)
        except ValueError:
            found = {}
        model_args = {**{key: found[key] for key in ("filters", "depth", "blocks", "repeats") if key in found},
                      **model_args}
    data_options = dataclasses.replace(options.data, channels=channels or loaded.channels)
    return loaded.model, dataclasses.replace(options, model_args=model_args, data=data_options)


def _new_model(options: TrainOptions, patch: int, images: int, source=None):
    """A fresh, compiled model (with ``source``'s weights when given); the dense model's input
    size is the patch size."""
    from denoise import models

    model_args = dict(options.model_args)
    if options.arch == "dense":
        model_args.setdefault("size", patch)
    model = models.build(options.arch, channels=options.data.channels, **model_args)
    if source is not None:
        _copy_weights(source, model, options.init_from)
    model.compile(
        optimizer=keras.optimizers.Adam(_learning_rate(options, _steps(options, images)), use_ema=options.average > 0,
                                        ema_momentum=options.average or 0.99),
        loss=_loss(options.loss),
        metrics=[psnr],
    )
    return model


def _copy_weights(source, target, name: str) -> None:
    """Give ``target`` the weights of ``source``: the same architecture, or a unet with fewer
    --repeats, whose missing blocks then start as identities (models.grow_from)."""
    from denoise import models

    shapes = [tuple(weight.shape) for weight in source.weights]
    if shapes == [tuple(weight.shape) for weight in target.weights]:
        target.set_weights(source.get_weights())
        return
    try:
        models.grow_from(source, target)
    except ValueError:
        raise ValueError(f"--init-from {name}: its layers do not match --arch {target.name} with these "
                         "--channels/--filters/--depth/--blocks, nor does it have fewer --repeats") from None


def _steps(options: TrainOptions, images: int) -> int:
    return options.steps_per_epoch or max(1, images // options.data.batch_size)


def _keras_callbacks(options: TrainOptions, logdir: str | None = None) -> list:
    """EarlyStopping, ReduceLROnPlateau and TensorBoard (into ``logdir``, default ``--logdir``)."""
    logdir = logdir or options.logdir
    callbacks = []
    if options.early_stopping:
        callbacks.append(keras.callbacks.EarlyStopping("val_psnr", patience=options.early_stopping, mode="max"))
    if options.reduce_on_plateau:
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau("val_psnr", factor=0.5, patience=options.reduce_on_plateau, mode="max")
        )
    if logdir:
        callbacks.append(keras.callbacks.TensorBoard(logdir))
    return callbacks


def _summary(state: dict, model) -> dict:
    return {
        "best_val_psnr": round(state["best_psnr"], 3),
        "epochs": state["epoch"],
        "seconds": round(state["seconds"], 1),
        "parameters": int(model.count_params()),
    }


def _learning_rate(options: TrainOptions, steps: int):
    """The rate or schedule: constant, or cosine decay to 1 % over the run; after a linear warm-up
    from 0 over ``options.warmup`` steps when there is one."""
    if options.schedule == "constant" and not options.warmup:
        return options.learning_rate
    total = options.epochs * steps
    warmup = min(options.warmup, total - 1)
    alpha = 1.0 if options.schedule == "constant" else 0.01  # alpha 1: no decay after the warm-up
    if not warmup:
        return keras.optimizers.schedules.CosineDecay(options.learning_rate, total, alpha=alpha)
    return keras.optimizers.schedules.CosineDecay(0.0, total - warmup, alpha=alpha, warmup_target=options.learning_rate,
                                                  warmup_steps=warmup)


def registry_name(options: TrainOptions) -> str | None:
    """The manifest name of the output: ``--name``, else the file's stem when it goes to the
    registry folder (weights/), else None (no manifest)."""
    from denoise import registry

    if options.name:
        return options.name
    out = Path(options.out)
    if out.parent.resolve() == registry.weights_dir().resolve():
        return out.stem
    return None


def validate(model, val_set, loss: str = "mse") -> dict:
    """``val_loss`` and ``val_psnr``: means over the validation images, on one device.

    Keras's own validation splits each batch over the replicas of a strategy, and fails on a
    batch of one image (images of different sizes come one by one) with two or more replicas.
    """
    loss_function = keras.losses.get(_loss(loss))
    losses, psnrs = [], []
    for inputs, clean in val_set:
        output = model(inputs, training=False)
        losses.append(np.asarray(ops.mean(loss_function(clean, output), axis=(1, 2))))
        psnrs.append(np.asarray(psnr(clean, output)))
    return {"val_loss": float(np.mean(np.concatenate(losses))), "val_psnr": float(np.mean(np.concatenate(psnrs)))}


def _checkpointer(options: TrainOptions, folder: Path, state: dict, log, val_set, write_outputs: bool = True):
    """A Keras callback that validates and saves the checkpoint and state each epoch, the best
    model to ``out`` and its manifest entry (only the checkpoint and state when ``write_outputs``
    is false). It must come first: the callbacks after it read the validation metrics it adds."""
    from denoise import registry

    name = registry_name(options)

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
            logs = {} if logs is None else logs
            logs.update(validate(self.model, val_set, options.loss))
            if options.average:
                with _averaged(self.model):
                    logs.update({f"average_{key}": value for key, value in validate(self.model, val_set, options.loss).items()})
            state["epoch"] = epoch + 1
            state["seconds"] += time.time() - self.epoch_started
            record = {key: float(value) for key, value in logs.items()}
            record.update(epoch=epoch + 1, seconds=round(state["seconds"], 1))
            self.history.append(record)
            val = record.get("val_psnr", -1.0)
            average_wins = record.get("average_val_psnr", -1.0) > val
            val = max(val, record.get("average_val_psnr", -1.0))
            if val > state["best_psnr"]:
                state["best_psnr"] = val
                if write_outputs:
                    with _averaged(self.model) if average_wins else contextlib.nullcontext():
                        save_inference_model(self.model, Path(options.out))
                    if name:
                        registry.record_training(dataclasses.replace(options, name=name), _summary(state, self.model))
            _save_atomic(self.model, folder / "checkpoint.keras")
            self.save_state()
            log(f"epoch {epoch + 1}: val_psnr {val:.2f} dB (best {state['best_psnr']:.2f})")

        def save_state(self):
            _write_json(folder / "state.json", {"options": dataclasses.asdict(options), "state": state})
            _write_json(folder / "history.json", self.history)
            _loss_curve(folder / "loss.png", self.history)

    return Checkpointer()


@contextlib.contextmanager
def _averaged(model):
    """The model with its optimizer's moving average of the weights in place of them, for a while."""
    weights = [variable.numpy() for variable in model.trainable_variables]
    model.optimizer.finalize_variable_values(model.trainable_variables)
    try:
        yield model
    finally:
        for variable, value in zip(model.trainable_variables, weights):
            variable.assign(value)


def _write_json(path: Path, value) -> None:
    from denoise.io import write_atomic

    write_atomic(path, (json.dumps(value, indent=2, default=str) + "\n").encode())


def save_inference_model(model, out: Path) -> None:
    """Save the model without its optimizer: a third of the size, and what ``denoise run`` needs."""
    # A model rebuilt from its config carries no optimizer (clone_model keeps it: 3x the size).
    bare = keras.Model.from_config(model.get_config())
    bare.set_weights(model.get_weights())
    _save_atomic(bare, out)


def _save_atomic(model, path: Path) -> None:
    """Save through a temporary file and a rename: Ctrl-C while saving keeps the previous file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp.keras")
    model.save(temporary)
    temporary.replace(path)


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
