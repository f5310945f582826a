"""Fine-tune a trained model on a GPU under Keras's JAX backend, the training photos held on the GPU.

`denoise train` feeds its model through tf.data, which a GPU machine without TensorFlow lacks.
This script keeps the objective of the natural-image stages (Gaussian noise of a level drawn
uniformly from 0 to --sigma-max, the model told the level, the eight flips and turns, mean
squared error on [0, 1] pixels) and adds the protocol's rounding of the noisy image to whole
grey levels. One jitted step draws the patches, turns them and noises them on the device, so
the accelerator never waits for the host. Every --val-every steps it scores the validation
images by the protocol at sigma 15, 25 and 50 (true sigma) and keeps the weights with the best
mean; those are written as a .keras file that loads under any backend, with a JSON log beside it.

    python train_scripts/gpu_finetune.py weights/gray.keras \\
        --data ../shared/datasets/bsds400_color --channels 1 \\
        --val-data ../shared/datasets/set12 --steps 20000 --out gray-finetuned.keras

--minutes instead of --steps times the first steps and runs as many as fit, rounded down to
a thousand; the log records the --steps value that repeats the run.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

VALIDATION_SIGMAS = (15, 25, 50)


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="the trained .keras model to start from")
    parser.add_argument("--data", type=Path, required=True, help="folder of clean training images")
    parser.add_argument("--val-data", type=Path, required=True, help="folder of clean validation images")
    parser.add_argument("--channels", type=int, choices=(1, 3), required=True, help="1 trains on grey, 3 on colour")
    parser.add_argument("--out", type=Path, required=True, help="where to write the best model (.keras)")
    parser.add_argument("--downscale", type=int, default=1,
                        help="shrink training images by this factor first (2x2 block mean), as the color stages do")
    # 256x256 fits the BSDS photos' 321x481 and lets the 1/16-scale levels see 16x16 positions.
    parser.add_argument("--patch-size", type=int, default=256, help="side of the square training patches")
    # 32 patches of 256x256: two million pixels a step keep an H200 busy with a 2.3M-parameter U-Net.
    parser.add_argument("--batch-size", type=int, default=32, help="patches per step")
    # The CPU stages' warm-restart rate; 32 patches a step average the gradient noise that batch 1 had.
    parser.add_argument("--lr", type=float, default=2e-4,
                        help="Adam peak learning rate, after a linear warm-up, cosine-decayed to 1%% of it")
    parser.add_argument("--sigma-max", type=float, default=75.0, help="noise levels are drawn from 0 to this")
    parser.add_argument("--steps", type=int, help="training steps (the cosine schedule spans them)")
    parser.add_argument("--minutes", type=float, help="instead of --steps: as many steps as fit in this time")
    parser.add_argument("--repeats", type=int,
                        help="first grow the U-Net to this many residual blocks per level, the added ones "
                             "starting as identities (denoise train --repeats)")
    # A validation pass costs about 40 steps' time: every 2000 steps adds 2 %.
    parser.add_argument("--val-every", type=int, default=2000, help="steps between validations")
    parser.add_argument("--seed", type=int, default=0, help="seed of patches, flips and noise")
    args = parser.parse_args(argv)
    if (args.steps is None) == (args.minutes is None):
        parser.error("give exactly one of --steps and --minutes")
    return args


def load_training(folder: Path, channels: int, downscale: int, patch: int) -> np.ndarray:
    """Every image of ``folder`` as one uint8 (N, H, W, C) stack: portrait images turned to
    landscape (a turn is one of the augmentations anyway), all cut to the smallest size."""
    from denoise import io
    from denoise.data import shrink

    images = []
    for path in sorted(p for p in folder.rglob("*") if io.is_image_name(p)):
        array = shrink(io.load_array(path, channels), downscale)
        images.append(np.swapaxes(array, 0, 1) if array.shape[0] > array.shape[1] else array)
    if not images:
        raise ValueError(f"{folder}: no images")
    height = min(image.shape[0] for image in images)
    width = min(image.shape[1] for image in images)
    if min(height, width) < patch:
        raise ValueError(f"{folder}: the smallest image is {height}x{width}, smaller than --patch-size {patch}")
    return np.stack([image[:height, :width] for image in images])


def load_validation(folder: Path, channels: int) -> list[tuple[np.ndarray, dict]]:
    """(clean, {sigma: noisy}) per image by the protocol (seeded by file name, seed 0), uint8."""
    from denoise import io
    from denoise.evaluate import load_uint8
    from denoise.noise import NoiseSpec, add_noise_uint, seed_for

    pairs = []
    for path in sorted(p for p in folder.rglob("*") if io.is_image_name(p)):
        clean = load_uint8(path)
        clean = clean[..., None] if clean.ndim == 2 else clean
        if clean.shape[-1] != channels:
            raise ValueError(f"{path}: {clean.shape[-1]} channels, the model takes {channels}")
        noisy = {}
        for sigma in VALIDATION_SIGMAS:
            spec = NoiseSpec("gaussian", sigma, sigma)
            noisy[sigma] = add_noise_uint(clean, spec, np.random.default_rng(seed_for(path.name, 0)))
        pairs.append((clean, noisy))
    return pairs


def main(argv=None) -> int:
    args = parse(argv)
    os.environ["KERAS_BACKEND"] = "jax"  # the training step is written in JAX; set before Keras loads
    import jax
    import jax.numpy as jnp
    import keras

    from denoise import models  # also registers the custom layers the model file names

    keras.utils.set_random_seed(args.seed)
    model = keras.saving.load_model(args.model, compile=False)
    if args.repeats:
        model = _grown(model, args.repeats)
    size_step = 2 ** models.unet_args(model)["depth"]  # pixel-unshuffle and depth - 1 downsamplings
    images = jnp.asarray(load_training(args.data, args.channels, args.downscale, args.patch_size))
    validation = load_validation(args.val_data, args.channels)
    print(f"training on {images.shape[0]} images of {images.shape[1]}x{images.shape[2]}, "
          f"validating on {len(validation)}; {jax.devices()[0].device_kind}", flush=True)

    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]
    start = time.time()
    steps = args.steps or _steps_that_fit(args, model, images, trainable, non_trainable)
    # A fresh Adam moves every weight by about the full rate in its first steps, which knocks a
    # trained model back; a linear warm-up over the first 500 steps (or tenth) avoids that.
    warmup = min(500, steps // 10)
    schedule = keras.optimizers.schedules.CosineDecay(0.0, steps - warmup, alpha=0.01, warmup_target=args.lr,
                                                      warmup_steps=warmup)
    optimizer = keras.optimizers.Adam(schedule)
    optimizer.build(model.trainable_variables)
    step = jax.jit(_train_step(model, optimizer, args), donate_argnums=(0,))
    predict = jax.jit(lambda weights, noisy, sigma: model.stateless_call(weights[0], weights[1], [noisy, sigma])[0])

    state = (trainable, non_trainable, [v.value for v in optimizer.variables])
    key = jax.random.key(args.seed)
    best, history, losses = None, [], []
    for index in range(steps + 1):  # step 0 scores the starting model: it is kept unless beaten
        if index:
            state, loss = step(state, images, jax.random.fold_in(key, index))
            losses.append(loss)
        if index % args.val_every == 0 or index == steps:
            scores = _validate(predict, state[:2], validation, size_step)
            mean = float(np.mean(list(scores.values())))
            history.append({"step": index, "loss": float(np.mean(jax.device_get(losses))) if losses else None,
                            "minutes": round((time.time() - start) / 60, 2),
                            **{f"psnr_sigma{s}": round(p, 3) for s, p in scores.items()}})
            losses = []
            print(json.dumps(history[-1]), flush=True)
            if best is None or mean > best[0]:
                best = (mean, index, jax.device_get(state[:2]))
                _save(model, best[2], args.out)
            _write_log(args, steps, best, history, start)  # each time: a run cut short keeps its log
    print(f"best at step {best[1]}: mean validation PSNR {best[0]:.3f} dB -> {args.out}", flush=True)
    return 0


def _grown(model, repeats: int):
    from denoise import models

    built_with = models.unet_args(model)
    if repeats < built_with["repeats"]:
        raise SystemExit(f"--repeats {repeats}: the model already has {built_with['repeats']}")
    if repeats == built_with["repeats"]:
        return model
    grown = models.unet(**{**built_with, "repeats": repeats})
    models.grow_from(model, grown)
    return grown


def _train_step(model, optimizer, args):
    import jax
    import jax.numpy as jnp

    size, batch, channels = args.patch_size, args.batch_size, args.channels

    def loss_of(trainable, non_trainable, noisy, sigma, clean):
        denoised, non_trainable = model.stateless_call(trainable, non_trainable, [noisy, sigma], training=True)
        return jnp.mean(jnp.square(denoised - clean)), non_trainable

    def step(state, images, key):
        trainable, non_trainable, optimizer_variables = state
        keys = jax.random.split(key, 6)
        which = jax.random.randint(keys[0], (batch,), 0, images.shape[0])
        top = jax.random.randint(keys[1], (batch,), 0, images.shape[1] - size + 1)
        left = jax.random.randint(keys[2], (batch,), 0, images.shape[2] - size + 1)
        crop = jax.vmap(lambda i, y, x: jax.lax.dynamic_slice(images[i], (y, x, 0), (size, size, channels)))
        clean = crop(which, top, left).astype(jnp.float32) / 255.0
        flips = jax.random.bernoulli(keys[3], 0.5, (3, batch, 1, 1, 1))  # the eight flips and turns
        clean = jnp.where(flips[0], clean[:, ::-1], clean)
        clean = jnp.where(flips[1], clean[:, :, ::-1], clean)
        clean = jnp.where(flips[2], jnp.swapaxes(clean, 1, 2), clean)
        sigma = jax.random.uniform(keys[4], (batch, 1), maxval=args.sigma_max / 255.0)
        noisy = clean + sigma[:, :, None, None] * jax.random.normal(keys[5], clean.shape)
        noisy = jnp.clip(jnp.round(noisy * 255.0), 0.0, 255.0) / 255.0  # what a saved noisy file holds
        (loss, non_trainable), grads = jax.value_and_grad(loss_of, has_aux=True)(
            trainable, non_trainable, noisy, sigma, clean)
        trainable, optimizer_variables = optimizer.stateless_apply(optimizer_variables, grads, trainable)
        return (trainable, non_trainable, optimizer_variables), loss

    return step


def _steps_that_fit(args, model, images, trainable, non_trainable) -> int:
    """Time 50 steps of a throwaway optimizer and return the steps that fill --minutes."""
    import jax
    import keras

    optimizer = keras.optimizers.Adam(args.lr)
    optimizer.build(model.trainable_variables)
    step = jax.jit(_train_step(model, optimizer, args))
    state = (trainable, non_trainable, [v.value for v in optimizer.variables])
    key = jax.random.key(args.seed + 1)
    jax.block_until_ready(step(state, images, key))  # compile
    began = time.time()
    for index in range(50):
        _, loss = step(state, images, jax.random.fold_in(key, index))
    jax.block_until_ready(loss)
    seconds = (time.time() - began) / 50
    steps = max(1000, int(args.minutes * 60 / seconds) // 1000 * 1000)
    print(f"{seconds * 1000:.1f} ms a step: {steps} steps", flush=True)
    return steps


def _validate(predict, weights, validation, size_step: int) -> dict[int, float]:
    """Mean PSNR (uint8 output, peak 255) per validation sigma, told the true sigma; each image
    mirror-padded to a multiple of ``size_step`` and cut back, as the pipeline does."""
    from denoise.evaluate import psnr

    scores = {}
    for sigma in VALIDATION_SIGMAS:
        values = []
        for clean, noisy in validation:
            height, width = clean.shape[:2]
            padded = np.pad(noisy[sigma], ((0, -height % size_step), (0, -width % size_step), (0, 0)), mode="reflect")
            output = predict(weights, padded[None].astype(np.float32) / 255.0, np.array([[sigma / 255.0]], np.float32))
            output = np.asarray(output[0])[:height, :width]
            values.append(psnr(clean, np.clip(np.round(output * 255.0), 0, 255).astype(np.uint8)))
        scores[sigma] = float(np.mean(values))
    return scores


def _save(model, weights, out: Path) -> None:
    for variable, value in zip(model.trainable_variables, weights[0]):
        variable.assign(value)
    for variable, value in zip(model.non_trainable_variables, weights[1]):
        variable.assign(value)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial.keras")
    model.save(partial)
    partial.replace(out)


def command_of(args: argparse.Namespace, steps: int) -> str:
    """The command line that repeats a run of ``args`` that took ``steps`` steps."""
    words = ["python", "train_scripts/gpu_finetune.py", str(args.model)]
    for flag in ("data", "val_data", "channels", "out", "downscale", "patch_size", "batch_size", "lr", "sigma_max"):
        words += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    if args.repeats:
        words += ["--repeats", str(args.repeats)]
    words += ["--steps", str(steps), "--val-every", str(args.val_every), "--seed", str(args.seed)]
    return shlex.join(words)


def _write_log(args, steps, best, history, start) -> None:
    import jax

    log = {"command": command_of(args, steps), "device": jax.devices()[0].device_kind, "steps": steps,
           "best_step": best[1], "best_mean_psnr": round(best[0], 3), "minutes": round((time.time() - start) / 60, 2),
           "history": history}
    Path(f"{args.out}.json").write_text(json.dumps(log, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
