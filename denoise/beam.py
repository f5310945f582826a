"""``denoise beam``: the batch job of ``denoise run`` as an Apache Beam pipeline.

    match files -> plan (output name, duplicates, skip existing) -> read + decode
      -> RunInference (tiles, batches, blending: the model loaded once per worker)
      -> encode + atomic write
    every per-file failure -> one JSON line in the dead-letter output

Files are matched and written through Beam's file systems, so local paths work as they are and
``gs://`` or ``s3://`` work with Beam's ``gcp`` or ``aws`` extras. Decoding, the sigma estimate,
tiling, batching rules, blending and encoding are the package's own (:mod:`denoise.io`,
:func:`denoise.pipeline.denoise_decoded`), so an output is byte-identical to ``denoise run``'s
for the same file and model whenever the model's kernels give the same result for a tile
whatever batch it runs in (see docs/beam.md).

One bad file never fails the job: a file that cannot be read, decoded, denoised or written
becomes a dead-letter record ``{"input", "output", "stage", "reason"}`` with the same reason
``denoise run`` prints. A model that cannot be loaded does fail the job (``run`` exits 2 then).

Needs the ``beam`` extra (``pip install 'denoise-images[beam]'``); nothing here is imported by the
rest of the package.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import posixpath
import re
import tempfile
import threading
import time
from pathlib import Path, PurePosixPath

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, PredictionResult, RunInference
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from denoise import io, registry
from denoise.plan import InputGuard, check_side_file
from denoise.report import one_line
from denoise.settings import Inference, UsageError

NAMESPACE = "denoise"
LOCAL_RUNNER = "FnApiRunner"  # the default: in process, no download (see run())
_WILDCARD = re.compile(r"[*?\[]")
log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class BeamOptions:
    """What ``denoise beam`` was asked; ``beam_args`` go to Beam's PipelineOptions as they are."""

    input_pattern: str
    output_prefix: str
    inference: Inference = Inference()
    format: str = "keep"
    quality: int = 95
    overwrite: bool = False
    dead_letter: str | None = None  # default: OUTPUT_PREFIX.dead-letter.jsonl
    beam_args: tuple[str, ...] = ()

    @property
    def dead_letter_path(self) -> str:
        return self.dead_letter or self.output_prefix.rstrip("/") + ".dead-letter.jsonl"


# --------------------------------------------------------------------------------------------
# Paths: what to match, and where each match goes
# --------------------------------------------------------------------------------------------


def is_local(path: str) -> bool:
    """Beam reads a path without a ``scheme://`` from the local file system."""
    return "://" not in path


def split_pattern(pattern: str) -> tuple[str, str]:
    """``(root, glob)``: the glob Beam matches, and the root that output names are relative to.

    A folder (local, or a URL ending in ``/``) is matched recursively, as ``denoise run`` walks
    it; otherwise the root is the pattern's folder before its first wildcard, so
    ``gs://b/in/**/*.png`` keeps the tree below ``gs://b/in/``.
    """
    if not _WILDCARD.search(pattern):
        if pattern.endswith("/") or (is_local(pattern) and os.path.isdir(pattern)):
            root = pattern.rstrip("/") + "/"
            return root, root + "**"
        return pattern[: pattern.rfind("/") + 1], pattern
    fixed = pattern[: _WILDCARD.search(pattern).start()]
    return fixed[: fixed.rfind("/") + 1], pattern


def target_for(relative: str, options: BeamOptions) -> str:
    """The output path of an input at ``relative`` (``/``-separated): ``run``'s naming rules."""
    name = io.output_path(Path(*PurePosixPath(relative).parts), Path("."), options.format)
    return FileSystems.join(options.output_prefix.rstrip("/"), *name.parts) if not is_local(
        options.output_prefix) else str(Path(options.output_prefix) / name)


def check(options: BeamOptions) -> None:
    """Refuse, before anything runs, what ``denoise run`` refuses with exit status 2."""
    options.inference.check()
    root, glob = split_pattern(options.input_pattern)
    if is_local(glob) and not _WILDCARD.search(glob) and not os.path.lexists(glob):
        raise UsageError(f"{options.input_pattern}: no such file or folder")
    if is_local(options.output_prefix):
        output = Path(options.output_prefix)
        if output.exists() and not output.is_dir():
            raise UsageError(f"{options.output_prefix}: the output must be a folder, not a file")
        if is_local(root) and root and output.resolve() == Path(root).resolve():
            raise UsageError(f"{options.input_pattern}: the output folder must differ from the input")
    elif options.output_prefix.rstrip("/") + "/" == root:
        raise UsageError(f"{options.input_pattern}: the output folder must differ from the input")
    if is_local(options.dead_letter_path) and is_local(root):
        check_side_file(Path(options.dead_letter_path), (Path(root or "."),), "--dead-letter")
    model = options.inference.model
    if model != "auto" and is_local(model) and registry.find(model) is None:
        if Path(model).suffix != ".keras" or not Path(model).is_file():
            known = ", ".join(entry["name"] for entry in registry.entries()) or "none"
            raise UsageError(f"{model}: not a registered model ({known}) nor a .keras file")
    # A missing or altered model file fails here in one line, not inside the workers.
    names = [registry.default_name(1, noise=options.inference.noise), registry.default_name(3, noise=options.inference.noise)] \
        if model == "auto" else [model] if registry.find(model) is not None else []
    for name in names:
        registry.verify(name)


def _dead(input_path: str, output: str, stage: str, reason: str) -> str:
    Metrics.counter(NAMESPACE, "failed").inc()
    return json.dumps({"input": input_path, "output": output, "stage": stage, "reason": reason})


class Plan(beam.DoFn):
    """A matched file -> ``(output, (sort key, input))``; non-images and outputs are dropped."""

    DEAD = "dead"

    def __init__(self, options: BeamOptions):
        self.options = options
        self.root, _ = split_pattern(options.input_pattern)

    def setup(self):
        output = self.options.output_prefix
        self.exclude = (str(Path(output).resolve()) + os.sep) if is_local(output) else output.rstrip("/") + "/"

    def process(self, metadata):
        # (No bare ``return`` in these generators: Beam warns about mixing it with ``yield``.)
        if isinstance(metadata, tuple):  # a local folder that could not be listed: (folder, reason)
            folder, reason = metadata
            yield beam.pvalue.TaggedOutput(self.DEAD, _dead(folder, "", "plan", reason))
        path = getattr(metadata, "path", metadata)  # Beam's FileMetadata, or a path from the local walk
        if isinstance(path, str) and io.is_image_name(Path(path)) and not self._in_output(path):
            root = self.root
            if is_local(path):
                relative = path[len(root):] if path.startswith(root) else os.path.relpath(path, root or ".")
                relative = relative.replace(os.sep, "/")
            else:
                relative = path[len(root):] if path.startswith(root) else posixpath.basename(path)
            yield target_for(relative, self.options), (tuple(relative.split("/")), path)

    def _in_output(self, path: str) -> bool:
        """The output folder inside the input is never read back (as in ``run``)."""
        if is_local(path):
            return (str(Path(path).resolve()) + os.sep).startswith(self.exclude)
        return path.startswith(self.exclude)


class Claim(beam.DoFn):
    """One input per output: the first in ``run``'s walk order wins, the others fail; an output
    that exists already is skipped unless ``--overwrite`` (so a rerun resumes)."""

    DEAD = "dead"

    def __init__(self, options: BeamOptions):
        self.overwrite = options.overwrite
        root, _ = split_pattern(options.input_pattern)
        local = is_local(root) and is_local(options.output_prefix)
        self.guard = InputGuard((Path(root or "."),), Path(options.output_prefix)) if local else None

    def process(self, element):
        target, claims = element
        claims = sorted(claims)
        for _, path in claims[1:]:
            yield beam.pvalue.TaggedOutput(self.DEAD, _dead(path, target, "plan", f"another input is also written to {target}"))
        path = claims[0][1]
        exists = os.path.exists(target) if is_local(target) else FileSystems.exists(target)
        # Inputs are never written, whatever links lead there; a folder in the way fails.
        reason = self.guard.problem(Path(target), Path(path)) if self.guard is not None else None
        if reason is None and is_local(target) and os.path.isdir(target):
            reason = f"a folder is in the way of the output {target}"
        if reason is not None:
            yield beam.pvalue.TaggedOutput(self.DEAD, _dead(path, target, "plan", reason))
        elif exists and not self.overwrite:
            Metrics.counter(NAMESPACE, "skipped").inc()
        else:
            yield path, target


# --------------------------------------------------------------------------------------------
# Read, denoise, write
# --------------------------------------------------------------------------------------------


def read_decoded(path: str) -> io.Decoded:
    """Decode one input: local files exactly as ``run`` reads them, others through Beam."""
    if is_local(path):
        return io.read_image(Path(path))
    try:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as stream:
            data = stream.read()
    except Exception as error:  # BeamIOError, a vanished object, a denied read
        raise io.ImageError(f"cannot read: {one_line(error)}") from None
    if not data:
        raise io.ImageError("empty file (0 bytes)")
    return io.decode_bytes(data)


class Read(beam.DoFn):
    """``(input, output)`` -> ``((input, output), decoded)``, or a dead letter."""

    DEAD = "dead"

    def process(self, job):
        path, target = job
        try:
            yield (path, target), read_decoded(path)
        except io.ImageError as error:
            yield beam.pvalue.TaggedOutput(self.DEAD, _dead(path, target, "read", str(error)))


@dataclasses.dataclass(frozen=True)
class Failure:
    """What RunInference hands back for an image the model could not denoise."""

    reason: str


def _pixels_of(element, most: int) -> int:
    """BatchElements weight of a (keyed) decoded image: its pixel count, at most ``most`` (one
    batch's worth). BatchElements emits the batch so far before an element that would overflow
    it, an empty one when the element alone is heavier than the batch: the model handler fails
    on that, so a large photo weighs a full batch and goes alone."""
    decoded = element[1] if isinstance(element, tuple) else element
    return min(most, int(decoded.pixels.shape[0] * decoded.pixels.shape[1]))


_MODEL_CACHE: dict[str, str] = {}
_MODEL_LOCK = threading.Lock()


def local_model(model: str) -> str:
    """A model given as a URL (``gs://.../x.keras``) copied once per worker process to a local
    temporary file; registry names and local paths are returned as they are."""
    if is_local(model):
        return model
    with _MODEL_LOCK:
        if model not in _MODEL_CACHE:
            folder = tempfile.mkdtemp(prefix="denoise-model-")
            local = os.path.join(folder, posixpath.basename(model.rstrip("/")) or "model.keras")
            with FileSystems.open(model, compression_type=CompressionTypes.UNCOMPRESSED) as source, \
                    open(local, "wb") as copy:
                while block := source.read(1 << 20):
                    copy.write(block)
            _MODEL_CACHE[model] = local
        return _MODEL_CACHE[model]


class DenoiseModelHandler(ModelHandler):
    """A TensorFlow model handler for the package's Keras models.

    The example is an :class:`denoise.io.Decoded` image; the inference its denoised pixels
    (float32 in [0, 1]) or a :class:`Failure`. ``load_model`` loads the model once per worker
    (RunInference shares it between the worker's threads); ``run_inference`` cuts a batch of
    images into tiles and runs them through the model in batches as ``denoise run`` does.
    """

    def __init__(self, inference: Inference = Inference()):
        super().__init__()
        self.inference = inference

    def load_model(self):
        from denoise import runtime
        from denoise.engine import Engine

        runtime.tensorflow(self.inference.device)
        engine = Engine(dataclasses.replace(self.inference, model=local_model(self.inference.model)), warn=log.warning)
        # Load now (both defaults under auto): a missing or corrupt model fails the job at once,
        # not every file one by one.
        for channels in (1, 3) if self.inference.model == "auto" else (1,):
            engine.model_for(channels)
        return engine

    def run_inference(self, batch, model, inference_args=None):
        from denoise import pipeline, registry
        from denoise.plan import Job

        def denoise(images):
            jobs = [(Job(index, Path(), Path()), decoded) for index, decoded in enumerate(images)]
            return pipeline.denoise_decoded(model, jobs)

        try:
            outputs = denoise(batch)
        except registry.WeightsError:
            raise
        except Exception:
            # Find the image(s) at fault: the others of the batch still get denoised.
            outputs = []
            for decoded in batch:
                try:
                    outputs.extend(denoise([decoded]))
                except registry.WeightsError:
                    raise
                except Exception as error:
                    outputs.append(Failure(f"cannot denoise: {one_line(error)}"))
        return [PredictionResult(decoded, output) for decoded, output in zip(batch, outputs)]

    def get_num_bytes(self, batch) -> int:
        return sum(decoded.pixels.nbytes for decoded in batch)

    def get_metrics_namespace(self) -> str:
        return NAMESPACE

    def batch_elements_kwargs(self):
        # Batches are weighed in pixels: at least one model batch's worth (``batch_size`` full
        # tiles), at most four, so small images batch well and memory stays bounded.
        budget = self.inference.batch_pixels
        return {"min_batch_size": budget, "max_batch_size": 4 * budget,
                "element_size_fn": functools.partial(_pixels_of, most=budget)}


def write_output(target: str, data: bytes) -> None:
    """Local outputs through ``io.write_atomic`` (temporary file + rename); others through Beam,
    where an object store (gs://, s3://) publishes an object whole when it is closed."""
    if is_local(target):
        io.write_atomic(Path(target), data)
        return
    with FileSystems.create(target, compression_type=CompressionTypes.UNCOMPRESSED) as stream:
        stream.write(data)


class Write(beam.DoFn):
    """``((input, output), PredictionResult)`` -> the output file, or a dead letter."""

    DEAD = "dead"

    def __init__(self, quality: int):
        self.quality = quality

    def process(self, element):
        (path, target), result = element
        if isinstance(result.inference, Failure):
            yield beam.pvalue.TaggedOutput(self.DEAD, _dead(path, target, "denoise", result.inference.reason))
        else:
            try:
                fmt = io.EXTENSIONS[posixpath.splitext(target)[1].lower()]
                write_output(target, io.encode(result.example, result.inference, fmt, self.quality))
                Metrics.counter(NAMESPACE, "ok").inc()
            except Exception as error:  # a full disk, a read-only folder, an encoder refusing the data
                reason = f"cannot write {target}: {one_line(error)}"
                yield beam.pvalue.TaggedOutput(self.DEAD, _dead(path, target, "write", reason))


# --------------------------------------------------------------------------------------------
# The pipeline
# --------------------------------------------------------------------------------------------


def build(pipeline: beam.Pipeline, options: BeamOptions):
    """Add the denoising steps to ``pipeline``; return the dead-letter PCollection (JSON lines)."""
    _, glob = split_pattern(options.input_pattern)
    handler = KeyedModelHandler(DenoiseModelHandler(options.inference))
    root, _ = split_pattern(options.input_pattern)
    if is_local(glob) and glob == root + "**":
        # A local folder is walked as `run` walks it, so broken links and unreadable folders
        # reach the dead letter instead of being dropped by the match.
        found: list = []
        walk = io.iter_inputs([Path(root)], exclude=Path(options.output_prefix) if is_local(options.output_prefix)
                              else None, on_error=lambda folder, reason: found.append((str(folder), reason)))
        found += [str(path) for path, _ in walk]
        matched = pipeline | "Walk" >> beam.Create(found, reshuffle=False)
    else:
        matched = pipeline | "Match" >> fileio.MatchFiles(glob)
    planned_files = matched | "Plan" >> beam.ParDo(Plan(options)).with_outputs(Plan.DEAD, main="planned")
    planned = (
        planned_files.planned
        # One group per output name: finds duplicates, and spreads the files over the workers.
        | "GroupByOutput" >> beam.GroupByKey()
        | "Claim" >> beam.ParDo(Claim(options)).with_outputs(Claim.DEAD, main="jobs")
    )
    read = planned.jobs | "Read" >> beam.ParDo(Read()).with_outputs(Read.DEAD, main="images")
    written = (
        read.images
        | "Denoise" >> RunInference(handler)
        | "Write" >> beam.ParDo(Write(options.quality)).with_outputs(Write.DEAD, main="written")
    )
    dead = (planned_files[Plan.DEAD], planned[Claim.DEAD], read[Read.DEAD], written[Write.DEAD]) \
        | "DeadLetters" >> beam.Flatten()
    dead | "WriteDeadLetters" >> beam.io.WriteToText(options.dead_letter_path, shard_name_template="", num_shards=1)
    return dead


def run(options: BeamOptions) -> dict:
    """Run the pipeline to the end; return counts (where the runner reports metrics) and time."""
    check(options)
    pipeline_options = PipelineOptions(list(options.beam_args))
    standard = pipeline_options.view_as(StandardOptions)
    if standard.runner is None:
        # Beam's DirectRunner first tries its Prism runner, which downloads a binary from GitHub
        # on first use; locally, run on the engine it falls back to for batch jobs instead.
        standard.runner = LOCAL_RUNNER
    started = time.time()
    pipeline = beam.Pipeline(options=pipeline_options)
    build(pipeline, options)
    result = pipeline.run()
    result.wait_until_finish()
    seconds = time.time() - started
    summary = {"ok": 0, "skipped": 0, "failed": 0}
    try:
        for counter in result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]:
            if counter.key.metric.name in summary:
                value = counter.committed if counter.committed is not None else counter.attempted
                summary[counter.key.metric.name] += value or 0
    except Exception:  # a runner that reports no metrics
        summary = {key: None for key in summary}
    summary.update(seconds=round(seconds, 3), dead_letter=options.dead_letter_path, strength=options.inference.strength)
    if summary["ok"] is not None:
        summary["images_per_second"] = round(summary["ok"] / max(seconds, 1e-9), 2)
    return summary
