"""The ``denoise`` command line: a thin Click layer over the package's modules.

TensorFlow is imported only inside the commands that need it, so ``denoise --help`` is instant.
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import sys
import threading
from pathlib import Path

import click

from denoise import __version__

EXIT_USAGE = 2


def entry() -> None:
    """The console script: run the command, then exit without the interpreter's teardown, which
    takes TensorFlow 2-3 seconds after the last output is written. Every command has finished
    its files, threads and reports when it returns, so nothing is lost by skipping it."""
    try:
        main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    if "tensorflow" not in sys.modules:
        sys.exit(code)
    # A Ctrl-C can end a command while its writer threads finish their last files: wait for them,
    # or os._exit would leave their temporary files behind.
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join(timeout=60)
    if not isinstance(code, int):  # None (success) or a message
        if code is not None:
            print(code, file=sys.stderr)
        code = 0 if code is None else 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _fail(message: str, code: int = EXIT_USAGE):
    click.echo(f"denoise: error: {message}", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="denoise")
def main():
    """Remove noise from images with convolutional denoising autoencoders.

    \b
    denoise run ./noisy ./clean        denoise a folder (the shipped models)
    denoise add-noise ./clean ./noisy  make noisy copies for trying it out
    denoise train --data DIR ...       train a model on your own images
    denoise eval ./clean --sigma 25    measure PSNR/SSIM on clean images
    denoise compare DIR --out s.png    look at crops at several --strength values
    denoise adapt DIR --out m.keras    learn your images' own noise, no clean ones needed
    denoise models                     list the shipped models
    """


FORMATS = {"keep": "keep", "png": "png", "jpeg": "jpeg", "jpg": "jpeg", "webp": "webp", "tiff": "tiff", "tif": "tiff"}
ADDED_NOISES = ("gaussian", "poisson", "salt-pepper", "speckle", "camera")  # noise.KINDS but the mixture
# As settings.NOISE_KINDS (a test checks): repeated so that --help needs no import of the package.
NOISE_KINDS = ("auto", "gaussian", "photo", "poisson", "speckle", "impulse", "correlated", "camera")


def format_option(help: str):
    """--format, with the common spellings of each format (jpg, tif)."""
    return click.option("--format", "fmt", type=click.Choice(list(FORMATS), case_sensitive=False), default="keep",
                        show_default=True, callback=lambda context, parameter, value: FORMATS[value.lower()], help=help)


def _sigma(context, parameter, value: str) -> float | None:
    from denoise.settings import parse_sigma

    try:
        return parse_sigma(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


INFERENCE_FIELDS = ("model", "sigma", "noise", "strength", "ensemble", "precision", "tile", "batch_size", "device")


def inference_options(sigma: str = "--sigma", noise: str = "--noise", single: bool = True):
    """The options of settings.Inference, shared by run, beam, eval and compare; the command gets
    them as one ``inference`` argument. ``sigma``/``noise`` name those flags (eval's --model-sigma
    and --model-noise); ``single`` False leaves out --model, --noise and --strength (compare offers
    lists of them)."""
    options = [
        click.option("--model", default="auto", show_default=True,
                     help="A name from `denoise models`, a .keras file, or auto: the shipped default for "
                          "each image."),
        click.option(sigma, "sigma", default="auto", show_default=True, callback=_sigma,
                     help="Noise level told to the model (0-255), or auto: read on each image."),
        click.option(noise, "noise", type=click.Choice(NOISE_KINDS), default="auto",
                     help="auto: photo where the noise spans more than a pixel (a camera's JPEG), poisson where "
                          "it grows with brightness, speckle where it grows in proportion to it, else gaussian. "
                          "The others (see README's table) need --sigma auto."),
        click.option("--strength", type=click.FloatRange(0, 4), default=1.0, show_default=True,
                     help="How much to clean: 1 default, 0 none, above 1 harder; below 1 blends the input "
                          "back. `denoise compare` shows it."),
        click.option("--ensemble", type=click.Choice(["auto", "1", "2", "4", "8"]), default="auto", is_flag=False,
                     flag_value="8", show_default=True,
                     callback=lambda context, parameter, value: None if value == "auto" else int(value),
                     help="Mean over N flips and turns of each tile (alone: 8), for N times the model time. "
                          "auto: the model's own if its manifest entry names one, else 2 on bfloat16 CPUs, else 1."),
        click.option("--precision", type=click.Choice(["auto", "float32", "bfloat16"]), default="auto",
                     help="Network arithmetic; auto: bfloat16 where the CPU has it. float32 with --ensemble 1 "
                          "gives the same output on every machine."),
        click.option("--tile", type=click.IntRange(64, None), default=1440, show_default=True,
                     help="Larger images go in overlapping tiles of at most this size."),
        click.option("--batch-size", type=click.IntRange(1, None), default=1, show_default=True,
                     help="Full tiles one model call holds; with --tile, what bounds memory."),
        click.option("--device", type=click.Choice(["auto", "cpu", "gpu"]), default="auto", show_default=True,
                     help="auto uses a GPU when TensorFlow sees one."),
    ]
    if not single:
        options = [option for option, name in zip(options, INFERENCE_FIELDS) if name not in ("model", "noise", "strength")]

    def decorate(function):
        @functools.wraps(function)
        def command(*args, **kwargs):
            from denoise.settings import Inference

            fields = {name: kwargs.pop(name) for name in INFERENCE_FIELDS if name in kwargs}
            return function(*args, inference=Inference(**fields), **kwargs)

        for option in reversed(options):
            command = option(command)
        return command

    return decorate


@main.command(options_metavar="[OPTIONS]")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path), metavar="INPUT... OUTPUT")
@inference_options()
@click.option("--recursive/--no-recursive", default=True, show_default=True, help="Scan input folders recursively.")
@format_option("Output format; keep writes each image in its input format.")
@click.option("--quality", type=click.IntRange(1, 100), default=95, show_default=True,
              help="JPEG/WebP quality (a lossless WebP input stays lossless).")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs (default: skip them, so a rerun resumes).")
@click.option("--dry-run", is_flag=True, help="List what would be done and exit.")
@click.option("--report", type=click.Path(path_type=Path),
              help="Write a JSON report here: a summary, and each file's status, reason, time, level, noise "
                   "and model.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no closing summary line.")
def run(paths, inference, recursive, fmt, quality, overwrite, dry_run, report, quiet):
    """Denoise images: INPUT... (files or folders) into the OUTPUT folder.

    The output tree mirrors the inputs, with the same file names, format, bit depth, alpha
    and metadata. One input file and an OUTPUT with an image name (run a.png clean.png) write
    that file. Existing outputs are skipped unless --overwrite. Each failure is one line on
    stderr, and a last line says what was done. Exit status: 0 all done, 1 some files failed,
    2 usage error.
    """
    from denoise.pipeline import run_batch
    from denoise.plan import RunOptions
    from denoise.registry import WeightsError
    from denoise.settings import UsageError

    if len(paths) < 2:
        _fail("give at least one INPUT and the OUTPUT folder")
    options = RunOptions(
        inputs=tuple(paths[:-1]), output=paths[-1], inference=inference, recursive=recursive, format=fmt,
        quality=quality, overwrite=overwrite, dry_run=dry_run, report=report,
        progress=not quiet and sys.stderr.isatty(), quiet=quiet,
    )
    try:
        summary = run_batch(options)
    except (UsageError, WeightsError) as error:
        _fail(str(error))
    sys.exit(1 if summary["failed"] else 0)


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("input_pattern")
@click.argument("output_prefix")
@click.argument("beam_args", nargs=-1, type=click.UNPROCESSED)
@inference_options()
@format_option("Output format; keep writes each image in its input format.")
@click.option("--quality", type=click.IntRange(1, 100), default=95, show_default=True,
              help="JPEG/WebP quality (a lossless WebP input stays lossless).")
@click.option("--overwrite", is_flag=True, help="Replace outputs that already exist (default: skip them).")
@click.option("--dead-letter", help="JSON-lines file of the files that failed (default OUTPUT_PREFIX.dead-letter.jsonl).")
def beam(input_pattern, output_prefix, beam_args, inference, fmt, quality, overwrite, dead_letter):
    """Denoise INPUT_PATTERN (a folder, or a glob such as gs://b/in/**/*.png) into OUTPUT_PREFIX
    with an Apache Beam pipeline; runner options (--runner, --project, ...) follow the two paths.

    Outputs are named, encoded and written as by `denoise run`. Failed files are listed in the
    dead-letter file. Prints a JSON summary. Exit status: 0 all done, 1 some files failed,
    2 usage error. Needs the beam extra; see docs/beam.md.
    """
    import logging

    # Beam logs notes (optional clients missing, batch statistics) as warnings: show errors only,
    # and the package's own warnings.
    logging.basicConfig(level=logging.ERROR, format="%(message)s")
    logging.getLogger("denoise").setLevel(logging.WARNING)
    try:
        from denoise import beam as beam_job
    except ImportError as error:
        _fail(f"denoise beam needs Apache Beam: pip install 'denoise-images[beam]' ({error})")
    from denoise.registry import WeightsError

    options = beam_job.BeamOptions(
        input_pattern=input_pattern, output_prefix=output_prefix, inference=inference, format=fmt, quality=quality,
        overwrite=overwrite, dead_letter=dead_letter, beam_args=tuple(beam_args),
    )
    try:
        summary = beam_job.run(options)
    except (beam_job.UsageError, WeightsError) as error:
        _fail(str(error))
    click.echo(json.dumps(summary))
    if summary["failed"]:
        click.echo(f"denoise: {summary['failed']} files failed; see {summary['dead_letter']}", err=True)
    sys.exit(1 if summary["failed"] else 0)


@main.command("add-noise")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path), metavar="INPUT... OUTPUT")
@click.option("--noise", type=click.Choice(ADDED_NOISES), default="gaussian", show_default=True,
              help="Noise type. camera: a camera's photon and read noise, demosaiced (grains of two "
                   "pixels), strongest in the shadows.")
@click.option("--level", default="25", show_default=True,
              help="gaussian: sigma (0-255); poisson, camera: peak photons (lower: noisier); salt-pepper: "
                   "share of pixels hit; speckle: sigma of the factor.")
@click.option("--seed", type=int, default=0, show_default=True, help="Noise seed; each file derives its own from it and its name.")
@click.option("--recursive/--no-recursive", default=True, show_default=True, help="Scan input folders recursively.")
@format_option("Output format (JPEG compresses the noise away: PNG keeps it exact).")
@click.option("--quality", type=click.IntRange(1, 100), default=95, show_default=True, help="JPEG/WebP quality (a lossless WebP input stays lossless).")
@click.option("--overwrite", is_flag=True, help="Replace outputs that already exist.")
@click.option("--dry-run", is_flag=True, help="List what would be done and exit.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def add_noise(paths, noise, level, seed, recursive, fmt, quality, overwrite, dry_run, quiet):
    """Write noisy copies of INPUT... (files or folders) into the OUTPUT folder."""
    from denoise.add_noise import add_noise_batch
    from denoise.noise import NoiseSpec
    from denoise.plan import RunOptions
    from denoise.settings import UsageError

    if len(paths) < 2:
        _fail("give at least one INPUT and the OUTPUT folder")
    try:
        spec = NoiseSpec.parse(noise, level)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--level") from None
    options = RunOptions(
        inputs=tuple(paths[:-1]), output=paths[-1], recursive=recursive, format=fmt, quality=quality,
        overwrite=overwrite, dry_run=dry_run, progress=not quiet and sys.stderr.isatty(), quiet=quiet,
    )
    try:
        summary = add_noise_batch(options, spec, seed)
    except UsageError as error:
        _fail(str(error))
    sys.exit(1 if summary["failed"] else 0)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def models(as_json):
    """List the shipped models: what each is for and how well it does."""
    from denoise import registry

    try:
        manifest = registry.load_manifest()
    except registry.WeightsError as error:
        _fail(str(error))
    entries = manifest["models"]
    if not entries:
        _fail(f"no models found in {registry.weights_dir() / 'manifest.json'} (set DENOISE_WEIGHTS to a folder "
              "with its own manifest.json, or reinstall denoise-images)")
    if as_json:
        click.echo(json.dumps(manifest, indent=2))
        return
    rows = [("name", "arch", "ch", "noise", "data", "params", "default for", "metrics")]
    for entry in entries:
        noise = entry.get("noise", {})
        metrics = entry.get("metrics", {})
        # The headline figures: denoised PSNR at each sigma with the true sigma, or for a camera's
        # noise at each photon count.
        headline = {key: value for key, value in metrics.items() if ("_psnr_sigma" in key or "_psnr_camera" in key)
                    and "noisy" not in key and not key.endswith("_auto")}
        groups: dict[str, list[str]] = {}  # data set -> "sigmaN PSNR"
        for key, value in headline.items():
            data_set, sigma = key.split("_psnr_")
            groups.setdefault(data_set, []).append(f"{sigma} {value:.2f}")
        shown = "; ".join(f"{data_set}: {', '.join(items)} dB" for data_set, items in groups.items())
        rows.append((
            entry["name"], entry.get("architecture", "?"), str(entry.get("channels", "?")),
            f"{noise.get('type', '?')} {noise.get('low', '?'):g}-{noise.get('high', '?'):g}",
            " + ".join(Path(part).name for part in str(entry.get("data", "?")).split(" + ")), f"{entry.get('parameters', 0):,}",
            ",".join(entry.get("default_for", [])) or "-", shown or "-",
        ))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


@main.command()
@click.option("--data", required=True, multiple=True,
              help="Clean images: a folder (recursive), PATH.npz with x_train/x_test, or tfds:NAME[:SPLIT]; "
                   "several folders: repeat it.")
@click.option("--data-dir", help="Folder of prepared tfds data sets (default ~/tensorflow_datasets); "
                                 "a data set missing there is downloaded when online.")
@click.option("--val-data", help="Separate validation images (same forms as --data); default: held out from --data.")
@click.option("--hold-out", is_flag=True,
              help="With --val-data: still hold out a tenth of the --data folders, never trained on, and "
                   "validate on both.")
@click.option("--arch", type=click.Choice(["unet", "conv", "dense"]), default="unet", show_default=True,
              help="unet: residual U-Net with noise-level input; conv, dense: the tutorial's autoencoders.")
@click.option("--channels", type=click.Choice(["1", "3"]), default=None,
              help="1 grey, 3 colour (default: those of --init-from, else 1).")
@click.option("--filters", type=click.IntRange(1), default=None, help="conv, unet: base filter count (default 16, 32).")
@click.option("--depth", type=click.IntRange(1), default=None, help="unet: resolution levels (default 3).")
@click.option("--blocks", type=click.IntRange(1), default=None, help="unet: convolutions per residual block (default 2).")
@click.option("--repeats", type=click.IntRange(1), default=None,
              help="unet: residual blocks per level (default 1); with --init-from a model with fewer, the "
                   "new blocks start as identities.")
@click.option("--latent-dim", type=click.IntRange(1), default=None, help="dense: size of the code (default 64).")
@click.option("--noise", type=click.Choice([*ADDED_NOISES, "mixture"]),
              default="gaussian", show_default=True, help="Noise added on the fly to every training image.")
@click.option("--sigma", "level", default=None,
              help="Level or range LOW:HIGH drawn per image (as `add-noise --level`). Default: gaussian 0:75, "
                   "poisson 10:100, salt-pepper 0.01:0.1, speckle 0.05:0.3, camera 25:400.")
@click.option("--clip/--no-clip", default=True, show_default=True, help="Clip noisy images to [0, 1].")
@click.option("--augment/--no-augment", default=True, show_default=True, help="Random flips and 90-degree turns.")
@click.option("--patch-size", type=click.IntRange(4), default=None,
              help="Training patch size (default 64 for folders, whole images for .npz/tfds of one size); "
                   "smaller images are mirror-padded. dense: its input size.")
@click.option("--downscale", type=click.IntRange(1), default=1, show_default=True,
              help="Shrink training images by this factor (block mean) first: 2 cleans JPEG photos of "
                   "chroma subsampling and noise. Not validation images.")
@click.option("--epochs", type=click.IntRange(1), default=20, show_default=True, help="Epochs to train (in total, across resumes).")
@click.option("--steps-per-epoch", type=click.IntRange(1), default=None, help="Batches per epoch (default: one pass over the images).")
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True, help="Patches per batch.")
@click.option("--loss", type=click.Choice(["mse", "l1", "bce"]), default="mse", show_default=True, help="Training loss.")
@click.option("--lr", "learning_rate", type=click.FloatRange(0, min_open=True), default=1e-3, show_default=True,
              help="Initial learning rate (Adam).")
@click.option("--schedule", type=click.Choice(["cosine", "constant"]), default="cosine", show_default=True,
              help="Learning-rate schedule: cosine decay to 1 % over all epochs, or constant.")
@click.option("--warmup", type=click.IntRange(0), default=0, show_default=True,
              help="Raise the learning rate from 0 over the first N steps; with --init-from, it keeps a "
                   "fresh Adam from knocking a trained model back.")
@click.option("--average", type=click.FloatRange(0, 1, max_open=True), default=0.0, show_default=True,
              help="Also keep a moving average of the weights (0.9995: the last ~2,000 steps), validated "
                   "each epoch and saved when better; 0: off.")
@click.option("--early-stopping", type=click.IntRange(0), default=0, show_default=True,
              help="Stop after N epochs without a better validation PSNR (0: off).")
@click.option("--reduce-lr-on-plateau", type=click.IntRange(0), default=0, show_default=True,
              help="Halve the LR after N epochs without a better validation PSNR (0: off; needs --schedule constant).")
@click.option("--val-sigma", type=click.FloatRange(0), default=25.0, show_default=True,
              help="Sigma of the fixed Gaussian validation noise (other noise types validate on their own noise).")
@click.option("--val-count", type=click.IntRange(1), default=1000, show_default=True, help="At most this many validation images.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for weights, patches and noise.")
@click.option("--logdir", help="Write TensorBoard logs here.")
@click.option("--strategy", type=click.Choice(["auto", "mirrored", "multiworker"]), default="auto", show_default=True,
              help="mirrored: over local devices; multiworker: over machines (TF_CONFIG); auto: mirrored "
                   "with several GPUs.")
@click.option("--device", type=click.Choice(["auto", "cpu", "gpu"]), default="auto", show_default=True,
              help="auto uses the GPUs when TensorFlow sees some.")
@click.option("--name", help="Registry name; with it (or with --out in weights/) the model's entry is written "
                             "to the manifest.json beside --out.")
@click.option("--resume", is_flag=True, help="Continue the run saved beside --out (same epoch and optimizer state).")
@click.option("--init-from", metavar="NAME|PATH",
              help="Fine-tune from this model (a shipped name or .keras file), with its architecture unless "
                   "given; use a lower --lr with --warmup.")
@click.option("--out", required=True, type=click.Path(), help="Where the best model (.keras) goes; run state in OUT.run/.")
@click.pass_context
def train(ctx, data, data_dir, val_data, hold_out, arch, channels, filters, depth, blocks, repeats, latent_dim, noise, level, clip,
          augment, patch_size, downscale, epochs, steps_per_epoch, batch_size, loss, learning_rate, schedule, warmup,
          average, early_stopping, reduce_lr_on_plateau, val_sigma, val_count, seed, logdir, strategy, device, name, resume,
          init_from, out):
    """Train a denoising autoencoder on clean images with noise added on the fly.

    Each epoch writes OUT.run/checkpoint.keras; Ctrl-C saves it too, and --resume continues.
    Exit status: 0 trained, 2 usage error or missing data, 130 interrupted.
    """
    from denoise import runtime

    try:
        runtime.tensorflow(device)  # before anything imports it, to keep its start-up logs quiet
    except ValueError as error:
        _fail(str(error))
    from denoise.data import SEVERAL, DataOptions
    from denoise.noise import NoiseSpec
    from denoise.train import TrainOptions, train as run_training

    model_args = {key: value for key, value in
                  {"filters": filters, "depth": depth, "blocks": blocks, "repeats": repeats,
                   "latent_dim": latent_dim}.items()
                  if value is not None}
    try:
        spec = NoiseSpec.parse(noise, "0:75" if level is None and noise == "gaussian" else level)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--sigma") from None
    data_options = DataOptions(
        source=SEVERAL.join(data), channels=int(channels) if channels else None, patch_size=patch_size, batch_size=batch_size,
        noise=spec, clip=clip, seed=seed, data_dir=data_dir, validation=val_data, validation_sigma=val_sigma, validation_count=val_count,
        hold_out=hold_out, augment=augment, downscale=downscale,
    )
    options = TrainOptions(
        data=data_options, out=out, arch=arch, model_args=model_args, epochs=epochs,
        steps_per_epoch=steps_per_epoch, loss=loss, learning_rate=learning_rate, schedule=schedule, warmup=warmup,
        early_stopping=early_stopping, reduce_on_plateau=reduce_lr_on_plateau, logdir=logdir,
        strategy=strategy, resume=resume, name=name, init_from=init_from, average=average,
        command=_command_line(ctx, skip=("resume", "device")),
    )
    try:
        summary = run_training(options, log=lambda message: click.echo(message, err=True))
    except ValueError as error:  # DataUnavailable, WeightsError and bad combinations of options
        _fail(str(error))
    except KeyboardInterrupt:
        sys.exit(130)
    click.echo(json.dumps(summary))


def _command_line(ctx: click.Context, skip: tuple[str, ...] = ()) -> str:
    """The command that repeats this one: every option that differs from its default, however it
    was invoked (shell, script or test), less those in ``skip`` that do not change the result."""
    words = ["denoise", ctx.info_name]
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if param.name in skip or value is None or value == param.default:
            continue
        if getattr(param, "is_flag", False) and param.secondary_opts:
            words.append(param.opts[0] if value else param.secondary_opts[0])
        elif getattr(param, "is_flag", False):
            words += [param.opts[0]] if value else []
        elif param.multiple:
            words += [word for item in value for word in (param.opts[0], str(item))]
        else:
            words += [param.opts[0], str(value)]
    return shlex.join(words)


@main.command("eval")
@click.argument("clean", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--noise", "added", type=click.Choice(ADDED_NOISES), default="gaussian",
              show_default=True, help="Noise added to the clean images (as `add-noise --noise`).")
@click.option("--sigma", "level", default="25", show_default=True, help="Noise level (units as in `add-noise --level`).")
@inference_options(sigma="--model-sigma", noise="--model-noise")
@click.option("--seed", type=int, default=0, show_default=True, help="Noise seed (each image derives its own from its name).")
@click.option("--denoised", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Score outputs made elsewhere (same relative names) instead of running a model.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def evaluate(clean, added, level, inference, seed, denoised, as_json):
    """Add noise to CLEAN images by the benchmark protocol, denoise, and print PSNR / SSIM.

    Noisy inputs are rounded to 8 bits and saved as PNG before denoising, exactly as the
    benchmarks do, so the figures compare with theirs.
    """
    from denoise import runtime
    from denoise.evaluate import EvalOptions, evaluate as run_evaluation
    from denoise.noise import NoiseSpec
    from denoise.registry import WeightsError
    from denoise.settings import UsageError

    try:
        spec = NoiseSpec.parse(added, level)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--sigma") from None
    runtime.tensorflow()
    options = EvalOptions(clean=tuple(clean), noise=spec, inference=inference, seed=seed, denoised=denoised)
    try:
        results = run_evaluation(options)
    except (UsageError, WeightsError, ValueError) as error:
        _fail(str(error))
    for failure in results["failed"]:
        click.echo(f"denoise: {failure['image']}: {failure['reason']}", err=True)
    if as_json:
        click.echo(json.dumps(results, indent=2))
    else:
        _print_scores(results)
    sys.exit(1 if results["failed"] else 0)


def _print_scores(results: dict) -> None:
    click.echo(f"{'image':30s} {'noisy PSNR':>10s} {'PSNR':>8s} {'noisy SSIM':>10s} {'SSIM':>7s}")
    for row in [*results["images"], {"image": "mean", **results["mean"]}]:
        click.echo(f"{row['image'][:30]:30s} {row['noisy_psnr']:10.2f} {row.get('psnr', float('nan')):8.2f} "
                   f"{row['noisy_ssim']:10.4f} {row.get('ssim', float('nan')):7.4f}")


def _numbers(context, parameter, value: str) -> tuple[float, ...]:
    try:
        numbers = tuple(float(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of numbers") from None
    if not numbers or not all(0 <= number <= 4 for number in numbers):
        raise click.BadParameter(f"{value!r}: give strengths from 0 to 4")
    return numbers


def _names(context, parameter, value: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    if not names:
        raise click.BadParameter("give at least one")
    return names


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path), metavar="INPUT...")
@click.option("--out", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="The sheet: a .png, or an .html page with the same crops.")
@click.option("--strengths", default="0.5,1,1.5,2", show_default=True, callback=_numbers,
              help="The --strength values to show, comma-separated (0-4).")
@click.option("--models", default="auto", show_default=True, callback=_names,
              help="Models to show side by side, comma-separated (as `run --model`).")
@click.option("--noise", "noises", default="auto", show_default=True, callback=_names,
              help=f"--noise kinds to show side by side, comma-separated ({', '.join(NOISE_KINDS)}).")
@click.option("--sample", type=click.IntRange(1, None), default=4, show_default=True,
              help="Images shown, spread over the inputs.")
@click.option("--crop", type=click.IntRange(16, None), default=128, show_default=True,
              help="Side of the crops in pixels: per image its most detailed and its flattest area.")
@click.option("--recursive/--no-recursive", default=True, show_default=True, help="Scan input folders recursively.")
@inference_options(single=False)
@click.option("--json", "as_json", is_flag=True, help="Print the sheet's layout as JSON.")
def compare(paths, out, strengths, models, noises, sample, crop, recursive, inference, as_json):
    """Show crops of a few of INPUT... (files or folders) denoised at several strengths, side by
    side at 100% zoom, to pick the --strength (or --model, --noise) for `denoise run`.

    Each crop is told the level `run` reads on its whole image; the columns say the setting and
    the level told. Runs on a sample and says how long `run` would take on all the inputs.
    Exit status: 0 done, 2 usage error.
    """
    from denoise import io
    from denoise.compare import CompareOptions, make_sheet
    from denoise.registry import WeightsError
    from denoise.settings import UsageError

    options = CompareOptions(inputs=tuple(paths), out=out, strengths=strengths, models=models, noises=noises,
                             sample=sample, crop=crop, recursive=recursive, inference=inference)
    try:
        layout = make_sheet(options, say=lambda message: click.echo(message, err=True))
    except (UsageError, WeightsError) as error:
        _fail(str(error))
    if as_json:
        click.echo(json.dumps(layout, indent=2))
        return
    width, height = layout["size"]
    columns = ", ".join(" ".join(label) for label in layout["columns"])
    click.echo(f"denoise compare: wrote {io.shown(out)} ({width}x{height}): {len(layout['rows'])} crops of "
               f"{layout['sample']} of {layout['images']} images; columns: {columns}")
    click.echo(f"denoise compare: `denoise run` on all {layout['images']} images ({layout['megapixels']:.1f} MP) "
               f"would take {_duration(layout['estimate_s'])} here, plus its start-up; this sheet took "
               f"{layout['seconds']:.1f} s. Then: denoise run ... --strength S")


def _duration(seconds: float) -> str:
    """An estimate in words: "under a second", "about 40 s", "about 3 minutes"."""
    if seconds < 1:
        return "under a second"
    if seconds < 90:
        return f"about {seconds:.0f} s"
    if seconds < 5400:
        return f"about {seconds / 60:.0f} minutes"
    return f"about {seconds / 3600:.1f} hours"


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path), metavar="NOISY...")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="The adapted model (.keras); its entry goes to the manifest.json beside it, its run state to OUT.run/.")
@click.option("--init-from", default="auto", show_default=True, metavar="NAME|PATH",
              help="The model to start from: a name from `denoise models`, a .keras file, or auto: the one "
                   "`denoise run` picks for these images.")
@click.option("--minutes", type=click.FloatRange(0, min_open=True), default=5.0, show_default=True,
              help="Training time, in total across --resume; it stops sooner when validation stops improving.")
@click.option("--noise", type=click.Choice(NOISE_KINDS), default="auto", show_default=True,
              help="The --noise you will give `denoise run --model OUT`: the images are prepared as it prepares them.")
@click.option("--correlated", type=click.Choice(["auto", "yes", "no"]), default="auto", show_default=True,
              help="Noise that spans several pixels: learn on the four phases of every other pixel. auto: "
                   "decided from the images, and photos that `run` sends to its photo model keep that model.")
@click.option("--patience", type=click.IntRange(0), default=30, show_default=True,
              help="Validations without improvement before stopping (0: only --minutes stops).")
@click.option("--lr", "learning_rate", type=click.FloatRange(0, min_open=True), default=5e-5, show_default=True,
              help="Peak learning rate, reached after the warm-up.")
@click.option("--max-steps", type=click.IntRange(1), default=None, help="Stop after this many steps in total.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for crops and pairs.")
@click.option("--recursive/--no-recursive", default=True, show_default=True, help="Scan input folders recursively.")
@click.option("--resume", is_flag=True, help="Continue the run saved in OUT.run/.")
@click.option("--device", type=click.Choice(["auto", "cpu", "gpu"]), default="auto", show_default=True,
              help="auto uses a GPU when TensorFlow sees one.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.pass_context
def adapt(ctx, paths, out, init_from, noise, minutes, correlated, patience, learning_rate, max_steps, seed, recursive, resume,
          device, quiet):
    """Fine-tune a model on your own NOISY... images (files or folders), no clean versions needed.

    Learns the images' own noise with a self-supervised loss (Neighbor2Neighbor pairs), keeps the
    best model by that loss on held-back crops, and writes it to OUT for `denoise run --model OUT`.
    If adapting never beats the starting model, that model is written unchanged; so is the photo
    model `run` gives colour photos whose noise spans several pixels, which learned that noise on
    whole images (see --correlated). Ctrl-C keeps the best so far; --resume continues. Exit
    status: 0 written, 2 usage error, 130 interrupted.
    """
    from denoise import runtime

    try:
        runtime.tensorflow(device)
    except ValueError as error:
        _fail(str(error))
    from denoise.adapt import AdaptOptions, adapt as run_adapt

    options = AdaptOptions(inputs=tuple(str(path) for path in paths), out=out, init_from=init_from, noise=noise,
                           minutes=minutes, correlated=correlated, patience=patience, learning_rate=learning_rate, max_steps=max_steps,
                           seed=seed, recursive=recursive, resume=resume,
                           command=_command_line(ctx, skip=("resume", "device", "quiet")))
    try:
        summary = run_adapt(options, say=lambda message: click.echo(message, err=True),
                            progress=not quiet and sys.stderr.isatty())
    except ValueError as error:  # WeightsError, no images, bad options
        _fail(str(error))
    except KeyboardInterrupt:
        sys.exit(130)
    click.echo(json.dumps({key: summary[key] for key in ("out", "init_from", "correlated", "adapted", "steps",
                                                         "seconds", "start_val_loss", "best_val_loss")}))
