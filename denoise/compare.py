"""``denoise compare``: look before choosing a strength. A sheet of crops of a few images, the
input beside the output at several ``--strength`` values (and, on request, several models or
``--noise`` kinds), at 100% zoom, each labelled with its setting and the level the model was told.

- It works on a sample: ``--sample`` images spread over the sorted inputs, decoded whole. Each is
  read as ``run`` reads it (noise level and treatment, :func:`treatments.reading_of`) on the
  whole image, not on a crop.
- Per image two crops: its most detailed window and its flattest (the highest and the lowest
  local variance of the grey levels; the flattest leaves out clipped black or white areas where
  it can). An image no larger than a crop is shown whole.
- Each crop is denoised with a margin of context around it and told the whole image's reading,
  so it comes out as ``run`` would write that part of the image. Strengths up to 1 share one
  network run (their blend with the input is cheap, :mod:`denoise.strength`); each strength
  above 1 is one more run of the crops.
- It says how long ``run`` would take on all the inputs, from the time the sample took per
  megapixel (decode and reading of the whole images, the model on the crops) and the inputs'
  sizes read from their headers.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io as _bytes
import itertools
import math
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from denoise import io, pipeline, strength as strengths, treatments
from denoise.engine import Engine
from denoise.plan import Job
from denoise.settings import Inference, UsageError, check_noise, check_strength

FORMATS = (".png", ".html")
SIZES_READ = 1000  # headers read at most for the estimate; more inputs are extrapolated from these
GAP = 6  # pixels between cells and rows
LINE = 12  # height of a line of the default font


@dataclasses.dataclass(frozen=True)
class CompareOptions:
    """What ``denoise compare`` was asked; the CLI fills it from its options."""

    inputs: tuple[Path, ...]
    out: Path
    strengths: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0)
    models: tuple[str, ...] = ("auto",)
    noises: tuple[str, ...] = ("auto",)
    sample: int = 4  # images shown
    crop: int = 128  # the side of a crop, in pixels
    recursive: bool = True
    inference: Inference = Inference()  # its model, noise and strength are the ones above, one by one


def check(options: CompareOptions) -> None:
    """Refuse, before anything runs, what cannot make a sheet (exit status 2)."""
    if options.out.suffix.lower() not in FORMATS:
        raise UsageError(f"--out {io.shown(options.out)}: the sheet is a .png or an .html file")
    if not options.strengths:
        raise UsageError("--strengths: give at least one")
    for value in options.strengths:
        check_strength(value)
    for noise in options.noises:
        check_noise(noise, options.inference.sigma)
    if options.sample < 1 or options.crop < 16:
        raise UsageError("--sample must be at least 1 and --crop at least 16")
    for path in options.inputs:
        if not path.exists():
            raise UsageError(f"{io.shown(path)}: no such file or folder")


def pick_crops(pixels: np.ndarray, size: int) -> list[tuple[str, tuple[int, int, int, int]]]:
    """``[(kind, (top, left, height, width))]``: the window of ``size`` with the most detail
    ("most detailed") and the flattest one that shares at most half of it ("flattest"), by the
    variance of the grey levels in each window; ``[("whole", ...)]`` for an image no larger than
    a window."""
    height, width = pixels.shape[:2]
    tall, wide = min(size, height), min(size, width)
    if (tall, wide) == (height, width):
        return [("whole", (0, 0, height, width))]
    factor = max(1, math.ceil(math.sqrt(height * width / 4e6)))  # large photos: on block means
    grey = pixels.mean(axis=-1, dtype=np.float64)
    if factor > 1:
        rows, columns = height // factor, width // factor
        grey = grey[: rows * factor, : columns * factor].reshape(rows, factor, columns, factor).mean(axis=(1, 3))
    small_tall, small_wide = max(1, tall // factor), max(1, wide // factor)
    sums = [np.pad(np.cumsum(np.cumsum(values, 0), 1), ((1, 0), (1, 0))) for values in (grey, grey * grey)]
    step = max(1, size // 8 // factor)
    tops = np.unique(np.r_[np.arange(0, grey.shape[0] - small_tall + 1, step), grey.shape[0] - small_tall])
    lefts = np.unique(np.r_[np.arange(0, grey.shape[1] - small_wide + 1, step), grey.shape[1] - small_wide])
    top, left = np.meshgrid(tops, lefts, indexing="ij")

    def window(total):
        return (total[top + small_tall, left + small_wide] - total[top, left + small_wide]
                - total[top + small_tall, left] + total[top, left]) / (small_tall * small_wide)

    mean = window(sums[0])
    spread = window(sums[1]) - mean * mean
    unclipped = (mean > 0.02) & (mean < 0.98)
    detailed = np.unravel_index(np.argmax(np.where(unclipped, spread, -np.inf) if unclipped.any() else spread),
                                spread.shape)
    chosen = [("most detailed", detailed)]
    overlap = (np.maximum(0, small_tall - np.abs(top - top[detailed]))
               * np.maximum(0, small_wide - np.abs(left - left[detailed])))
    apart = overlap <= small_tall * small_wide // 2  # at most half of it shared with the detailed one
    if apart.any():
        candidates = apart & unclipped if (apart & unclipped).any() else apart
        chosen.append(("flattest", np.unravel_index(np.argmin(np.where(candidates, spread, np.inf)), spread.shape)))
    crops = []
    for kind, where in chosen:
        y, x = min(int(top[where]) * factor, height - tall), min(int(left[where]) * factor, width - wide)
        crops.append((kind, (y, x, tall, wide)))
    return crops


def sample_of(count: int, size: int) -> list[int]:
    """Indices of ``size`` items spread evenly over ``count`` (all of them when fewer)."""
    if count <= size:
        return list(range(count))
    if size == 1:
        return [0]
    return sorted({round(index * (count - 1) / (size - 1)) for index in range(size)})


def megapixels(paths: list[Path]) -> tuple[float, int]:
    """The inputs' megapixels in all, from their headers (at most :data:`SIZES_READ` of them read,
    the rest taken as their mean), and how many headers were read."""
    chosen = [paths[index] for index in sample_of(len(paths), SIZES_READ)]
    sizes = []
    for path in chosen:
        try:
            with Image.open(path) as image:
                sizes.append(image.size[0] * image.size[1] / 1e6)
        except Exception:  # unreadable: run would fail it at once
            continue
    if not sizes:
        return 0.0, 0
    return float(np.mean(sizes)) * len(paths), len(sizes)


@dataclasses.dataclass
class _Shown:
    """A sample image: its pixels, crops and what each variant read on it."""

    name: str
    decoded: io.Decoded
    crops: list[tuple[str, tuple[int, int, int, int]]]
    regions: list[tuple[int, int, int, int]] = dataclasses.field(default_factory=list)  # crop + context
    readings: dict = dataclasses.field(default_factory=dict)  # variant -> Reading
    models: dict = dataclasses.field(default_factory=dict)  # variant -> LoadedModel


def _region(box: tuple[int, int, int, int], shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """The crop with :data:`treatments.MARGIN` of context, starting on even rows and columns (so a
    mosaic of it has the whole image's phases)."""
    top, left, tall, wide = box
    region_top, region_left = max(0, top - treatments.MARGIN), max(0, left - treatments.MARGIN)
    region_top -= region_top % 2
    region_left -= region_left % 2
    bottom, right = min(shape[0], top + tall + treatments.MARGIN), min(shape[1], left + wide + treatments.MARGIN)
    return region_top, region_left, bottom - region_top, right - region_left


def make_sheet(options: CompareOptions, say: Callable[[str], None] | None = None) -> dict:
    """Make the sheet at ``options.out``; return its layout: the columns, and per row the image,
    crop and each cell's labels and rectangle, the sheet's size, the estimate for all inputs."""
    say = say or (lambda message: print(message, file=sys.stderr))
    check(options)
    began = time.perf_counter()
    sheet = options.out.resolve()
    files = [path for path, _ in io.iter_inputs(list(options.inputs), options.recursive) if path.resolve() != sheet]
    if not files:
        raise UsageError("no images found in the inputs")
    shown: list[_Shown] = []
    spent_reading = 0.0  # decode and the first variant's reading: what run does per image
    for index in sample_of(len(files), options.sample):
        path = files[index]
        start = time.perf_counter()
        try:
            decoded = io.read_image(path)
        except io.ImageError as error:
            say(f"denoise: {io.shown(path)}: {error}; left out of the sheet")
            continue
        spent_reading += time.perf_counter() - start
        image = _Shown(_name(path, options.inputs), decoded, pick_crops(decoded.pixels, options.crop))
        image.regions = [_region(box, decoded.pixels.shape) for _, box in image.crops]
        shown.append(image)
    if not shown:
        raise UsageError("none of the sampled images could be read")
    from denoise import runtime

    try:
        runtime.tensorflow(options.inference.device)
    except ValueError as error:
        raise UsageError(str(error)) from None
    variants = list(itertools.product(options.models, options.noises))
    low = sorted({value for value in options.strengths if value <= 1.0})
    high = sorted({value for value in options.strengths if value > 1.0})
    outputs: dict = {}  # (variant, strength) -> per image, per crop: the output crop
    model_seconds, model_pixels = 0.0, 0
    for number, variant in enumerate(variants):
        model, noise = variant
        runner = Engine(dataclasses.replace(options.inference, model=model, noise=noise), say)
        for image in shown:
            start = time.perf_counter()
            image.readings[variant] = treatments.reading_of(image.decoded, runner)
            if number == 0:
                spent_reading += time.perf_counter() - start
            pixels = image.decoded.pixels
            channels = pixels.shape[-1] if not treatments.grey_in_colour(pixels) else 1
            image.models[variant] = runner.model_for(channels, "photo" if image.readings[variant].noise == "photo" else None)
        _warm_up(runner, shown, variant)
        runs = ([1.0] if low else []) + high
        for value in runs:
            start = time.perf_counter()
            results = _denoise(runner.at(dataclasses.replace(runner.inference, strength=value)), shown, variant)
            model_seconds += time.perf_counter() - start
            model_pixels += sum(region[2] * region[3] for image in shown for region in image.regions)
            if value == 1.0:
                for each in low:
                    outputs[variant, each] = [[strengths.blend(result.copy(), source, each) for result, source in crops]
                                              for crops in results]
            else:
                outputs[variant, value] = [[result for result, _ in crops] for crops in results]
    columns = [{"label": ["input"]}] + [
        {"model": model, "noise": noise, "strength": value, "label": _setting(model, noise, value, options)}
        for (model, noise), value in itertools.product(variants, sorted(set(options.strengths)))]
    rows = []
    for number, image in enumerate(shown):
        for index, (kind, box) in enumerate(image.crops):
            cells = [{"label": ["input", ""], "pixels": _cut(image.decoded.pixels, box)}]
            for column in columns[1:]:
                variant = (column["model"], column["noise"])
                told = _told(image.readings[variant], image.models[variant], column["strength"])
                cells.append({"label": [*column["label"], told], "told": told,
                              "pixels": outputs[variant, column["strength"]][number][index]})
            top, left, tall, wide = box
            reading = image.readings[variants[0]]
            rows.append({"image": image.name, "crop": kind, "box": [top, left, tall, wide],
                         "label": f"{image.name}: {kind} ({wide}x{tall} at x {left}, y {top}), "
                                  f"{', '.join(sorted({loaded.name for loaded in image.models.values()}))}"
                                  + (f", noise read as {reading.noise}" if reading.noise else ""),
                         "cells": cells})
    total, read = megapixels(files)
    sample_pixels = sum(image.decoded.pixels.shape[0] * image.decoded.pixels.shape[1] for image in shown) / 1e6
    per_megapixel = spent_reading / max(sample_pixels, 1e-9) + model_seconds / max(model_pixels / 1e6, 1e-9)
    estimate = total * per_megapixel / len(variants)  # one variant a run
    layout = _draw(options, columns, rows)
    layout.update(images=len(files), sample=len(shown), megapixels=round(total, 3), headers_read=read,
                  estimate_s=round(estimate, 1), seconds=round(time.perf_counter() - began, 1))
    return layout


def _name(path: Path, inputs: tuple[Path, ...]) -> str:
    for root in inputs:
        if root.is_dir() and path.is_relative_to(root):
            return str(path.relative_to(root))
    return path.name


def _warm_up(runner: Engine, shown: list[_Shown], variant) -> None:
    """One small region per model, so the timed runs after it hold no tracing of the network."""
    seen = set()
    for image in shown:
        loaded = image.models[variant]
        if loaded.name not in seen:
            seen.add(loaded.name)
            region = image.regions[0]
            decoded = dataclasses.replace(image.decoded, pixels=_cut(image.decoded.pixels, region), alpha=None)
            pipeline.denoise_decoded(runner, [(Job(0, Path(), Path()), decoded)], [image.readings[variant]])


def _denoise(runner: Engine, shown: list[_Shown], variant) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """Every crop through ``runner`` in one batch run, each with its margin and its whole image's
    reading: per image, per crop, ``(output crop, input crop)``."""
    jobs, readings, places = [], [], []
    counter = itertools.count()
    for image in shown:
        for (_, box), region in zip(image.crops, image.regions):
            decoded = dataclasses.replace(image.decoded, pixels=_cut(image.decoded.pixels, region), alpha=None)
            jobs.append((Job(next(counter), Path(image.name), Path()), decoded))
            readings.append(image.readings[variant])
            places.append((box, region))
    results = iter(zip(pipeline.denoise_decoded(runner, jobs, readings), jobs, places))
    per_image = []
    for image in shown:
        crops = []
        for _ in image.crops:
            output, (_, decoded), (box, region) = next(results)
            crops.append((_cut(output, box, region), _cut(decoded.pixels, box, region)))
        per_image.append(crops)
    return per_image


def _cut(pixels: np.ndarray, box, within=(0, 0)) -> np.ndarray:
    """``box`` (top, left, height, width) of the image out of ``pixels``, which hold the image's
    part starting at ``within`` (top, left)."""
    top, left, tall, wide = box
    top, left = top - within[0], left - within[1]
    return np.ascontiguousarray(pixels[top : top + tall, left : left + wide])


def _setting(model: str, noise: str, value: float, options: CompareOptions) -> list[str]:
    """The label lines that say a column's setting: the flags to give ``run``."""
    lines = []
    if len(options.models) > 1:
        lines.append(f"--model {model}")
    if len(options.noises) > 1:
        lines.append(f"--noise {noise}")
    return [*lines, f"--strength {value:g}"]


def _told(reading: treatments.Reading, loaded, value: float) -> str:
    """The label line that says what the model was told (0-255 units of the image; for noise
    stabilised first, of the transformed image the model sees, whose levels are not the image's)."""
    if not loaded.noise_level_input or reading.level is None:
        return "no level input" + (": as 1" if value > 1 else "")
    if reading.stabilizer is not None:
        told = f"told {reading.level / reading.span * strengths.level_factor(value):.1f} after the transform"
    else:
        told = f"told {reading.level * strengths.level_factor(value):.1f}"
    share = strengths.kept_share(value)
    return told + (f", {share:.0%} kept" if share else "")


def _display(pixels: np.ndarray, mode: str) -> Image.Image:
    array = np.round(np.clip(pixels, 0.0, 1.0) * 255.0).astype(np.uint8)
    if mode == "L":
        return Image.fromarray(array[..., 0])
    return Image.fromarray(np.repeat(array, 3, axis=-1) if array.shape[-1] == 1 else array[..., :3])


def _draw(options: CompareOptions, columns: list[dict], rows: list[dict]) -> dict:
    """Lay the cells out, draw them (PNG) or write them (HTML), and return the layout."""
    font = ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("L", (1, 1)))

    def text_width(text: str) -> int:
        return int(math.ceil(measure.textlength(text, font=font)))

    mode = "L" if all(cell["pixels"].shape[-1] == 1 for row in rows for cell in row["cells"]) else "RGB"
    widths = [max([row["cells"][index]["pixels"].shape[1] for row in rows]
                  + [text_width(line) for row in rows for line in row["cells"][index]["label"]])
              for index in range(len(columns))]
    label_lines = max(len(cell["label"]) for row in rows for cell in row["cells"])
    title = [f"denoise compare: {len({row['image'] for row in rows})} images, crops at 100% zoom",
             "told: the noise level the model was told (0-255); kept: the share of the input blended back"]
    width = max([GAP + sum(value + GAP for value in widths)]
                + [text_width(line) + 2 * GAP for line in [*title, *(row["label"] for row in rows)]])
    y = GAP + len(title) * LINE + GAP
    for row in rows:
        x = GAP
        row["y"] = y
        tall = max(cell["pixels"].shape[0] for cell in row["cells"])
        for cell, column_width in zip(row["cells"], widths):
            cell["rect"] = [x, y + LINE + label_lines * LINE, cell["pixels"].shape[1], cell["pixels"].shape[0]]
            x += column_width + GAP
        y += LINE + label_lines * LINE + tall + GAP
    height = y
    if options.out.suffix.lower() == ".html":
        _write_html(options.out, title, rows, mode)
    else:
        sheet = Image.new(mode, (width, height), 255 if mode == "L" else (255, 255, 255))
        draw = ImageDraw.Draw(sheet)
        ink = 0 if mode == "L" else (0, 0, 0)
        for number, line in enumerate(title):
            draw.text((GAP, GAP + number * LINE), line, fill=ink, font=font)
        for row in rows:
            draw.text((GAP, row["y"]), row["label"], fill=ink, font=font)
            for cell in row["cells"]:
                x, top = cell["rect"][:2]
                for number, line in enumerate(cell["label"]):
                    draw.text((x, top - (label_lines - number) * LINE), line, fill=ink, font=font)
                sheet.paste(_display(cell["pixels"], mode), (x, top))
        options.out.parent.mkdir(parents=True, exist_ok=True)
        buffer = _bytes.BytesIO()
        sheet.save(buffer, "PNG", optimize=True)
        io.write_atomic(options.out, buffer.getvalue())
    for row in rows:
        for cell in row["cells"]:
            del cell["pixels"]
    return {"out": str(options.out), "size": [width, height], "columns": [column["label"] for column in columns],
            "rows": rows}


def _write_html(path: Path, title: list[str], rows: list[dict], mode: str) -> None:
    parts = ["<!doctype html><meta charset='utf-8'><title>denoise compare</title>",
             "<style>body{font:12px sans-serif}figure{display:inline-block;margin:0 6px 6px 0;vertical-align:top}"
             "img{image-rendering:pixelated}figcaption{white-space:pre}</style>",
             *(f"<p>{html.escape(line)}</p>" for line in title)]
    for row in rows:
        parts.append(f"<h4>{html.escape(row['label'])}</h4><div>")
        for cell in row["cells"]:
            buffer = _bytes.BytesIO()
            _display(cell["pixels"], mode).save(buffer, "PNG")
            data = base64.b64encode(buffer.getvalue()).decode()
            tall, wide = cell["pixels"].shape[:2]
            caption = html.escape("\n".join(line for line in cell["label"] if line))
            parts.append(f"<figure><figcaption>{caption}</figcaption>"
                         f"<img width='{wide}' height='{tall}' src='data:image/png;base64,{data}'></figure>")
        parts.append("</div>")
    path.parent.mkdir(parents=True, exist_ok=True)
    io.write_atomic(path, "\n".join(parts).encode())
