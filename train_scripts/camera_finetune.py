"""Fine-tune a colour model on camera-noise pairs (``camera_pairs.py``): the model ``run`` sends
photos whose noise spans more than a pixel to (``color-real``).

The model is told each pair's stored level, the one ``run`` reads on the image
(``denoise.calibrate.level_for``), so what it learns is what it is told at run time. Training is
Keras ``fit`` on 128x128 crops with the eight flips and turns, mean squared error on [0, 1]
pixels; every ``--val-every`` steps the held-back pairs are scored (PSNR of the uint8 output, the
protocol's rounding) and the best weights are written to ``--out`` with a JSON log beside it.
Rerunning with the same arguments resumes from ``--out``'s checkpoint folder.

    python train_scripts/camera_finetune.py weights/color.keras --train /tmp/pairs_train.npz \\
        /tmp/pairs_clean.npz --val /tmp/pairs_val.npz --steps 30000 --out weights/color-photo.keras.run/stage1.keras
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="the colour .keras model to start from")
    parser.add_argument("--train", type=Path, nargs="+", required=True,
                        help="training pairs (.npz files from camera_pairs.py), drawn from evenly")
    parser.add_argument("--val", type=Path, required=True, help="held-back pairs (.npz from camera_pairs.py --held-back)")
    parser.add_argument("--out", type=Path, required=True, help="where to write the best model (.keras)")
    # 12,000 steps of 4 crops: six passes over 8,000 pairs, about 45 minutes on two cores.
    parser.add_argument("--steps", type=int, default=12000, help="training steps (the cosine schedule spans them)")
    # 4 crops of 128x128: the CPU colour stages' batch, about 0.2 s a step on two cores.
    parser.add_argument("--batch-size", type=int, default=4, help="crops per step")
    # The last CPU colour stage's rate: gentle enough to keep what the start model knows.
    parser.add_argument("--lr", type=float, default=1e-4, help="Adam peak rate after the warm-up, cosine-decayed to 1%%")
    # A fresh Adam at full rate knocks a trained model back before it learns anything new.
    parser.add_argument("--warmup", type=int, default=500, help="steps of linear warm-up")
    parser.add_argument("--val-every", type=int, default=1000, help="steps between validations")
    parser.add_argument("--seed", type=int, default=0, help="seed of the crop order and turns")
    return parser.parse_args(argv)


def psnr_uint8(outputs: np.ndarray, references: np.ndarray) -> float:
    """Mean PSNR of the rounded outputs ([0, 1]) against uint8 references."""
    rounded = np.clip(np.round(outputs * 255.0), 0, 255)
    errors = np.mean((rounded - references.astype(np.float64)) ** 2, axis=(1, 2, 3))
    return float(np.mean(10 * np.log10(255.0**2 / np.maximum(errors, 1e-10))))


def main(argv=None) -> None:
    args = parse(argv)
    import keras
    import tensorflow as tf

    from denoise import models  # noqa: F401  registers the custom layers
    from denoise.train import save_inference_model

    keras.utils.set_random_seed(args.seed)
    files = [np.load(path) for path in args.train]  # in memory: an NpzFile reads the whole array at each index
    train = {key: np.concatenate([file[key] for file in files]) for key in ("noisy", "reference", "level")}
    val = dict(np.load(args.val))
    run = args.out.with_suffix(".run")
    run.mkdir(parents=True, exist_ok=True)
    checkpoint, log_path = run / "checkpoint.keras", args.out.with_suffix(".json")
    log = json.loads(log_path.read_text()) if log_path.exists() and checkpoint.exists() else {"curve": []}

    start = keras.saving.load_model(checkpoint if checkpoint.exists() else args.model, compile=False)
    done = log["curve"][-1]["step"] if log["curve"] else 0
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, max(1, args.steps - args.warmup), alpha=0.01, warmup_target=args.lr, warmup_steps=args.warmup)
    start.compile(optimizer=keras.optimizers.Adam(schedule), loss="mse")
    start.optimizer.iterations.assign(done)

    def crops(step_seed):
        count = len(train["level"])
        rng = np.random.default_rng(step_seed)
        while True:
            index = rng.integers(count)
            turns, flip = rng.integers(4), rng.integers(2)
            noisy, clean = train["noisy"][index], train["reference"][index]
            noisy, clean = np.rot90(noisy, turns), np.rot90(clean, turns)
            if flip:
                noisy, clean = noisy[:, ::-1], clean[:, ::-1]
            yield ({"image": noisy.astype(np.float32) / 255.0, "sigma": np.array([train["level"][index] / 255.0], np.float32)},
                   clean.astype(np.float32) / 255.0)

    size, channels = train["noisy"].shape[1], train["noisy"].shape[-1]
    spec = ({"image": tf.TensorSpec((size, size, channels), tf.float32), "sigma": tf.TensorSpec((1,), tf.float32)},
            tf.TensorSpec((size, size, channels), tf.float32))
    stream = crops(args.seed * 100003 + done)  # one generator: each fit() call goes on where the last stopped
    dataset = (tf.data.Dataset.from_generator(lambda: stream, output_signature=spec)
               .batch(args.batch_size).prefetch(tf.data.AUTOTUNE))

    def validate(model) -> float:
        inputs = {"image": val["noisy"].astype(np.float32) / 255.0, "sigma": val["level"][:, None] / 255.0}
        return psnr_uint8(model.predict(inputs, batch_size=8, verbose=0), val["reference"])

    if not log["curve"]:
        log.update(args=vars(args) | {
            "model": str(args.model), "train": [str(path) for path in args.train], "val": str(args.val), "out": str(args.out)})
        log["curve"].append({"step": 0, "val_psnr": validate(start), "seconds": 0.0})
        log["best"] = log["curve"][0]
        save_inference_model(start, args.out)  # the best so far: --out always holds the best model
        print(f"step 0: val {log['curve'][0]['val_psnr']:.3f} dB", flush=True)
    began = time.time() - log["curve"][-1]["seconds"]
    while done < args.steps:
        chunk = min(args.val_every, args.steps - done)
        start.fit(dataset, steps_per_epoch=chunk, epochs=1, verbose=0)
        done += chunk
        score = validate(start)
        point = {"step": done, "val_psnr": score, "seconds": round(time.time() - began, 1)}
        log["curve"].append(point)
        if score > log["best"]["val_psnr"]:
            log["best"] = point
            save_inference_model(start, args.out)
        start.save(checkpoint)
        log_path.write_text(json.dumps(log, indent=2) + "\n")
        print(f"step {done}: val {score:.3f} dB (best {log['best']['val_psnr']:.3f} at {log['best']['step']}), "
              f"{point['seconds']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
