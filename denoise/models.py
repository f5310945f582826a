"""Denoising autoencoder architectures: Keras 3 functional models, no I/O and no compile.

Every model maps a noisy image in [0, 1] of shape (H, W, C) to a clean estimate of the same shape.
Models with a noise-level input take a second input ``sigma`` of shape (1,): the noise standard
deviation in [0, 1] units (sigma / 255), broadcast inside the model to a map, as FFDNet does.

Only Keras layers and ``keras.ops`` are used, so the same code trains under the TensorFlow, JAX
or PyTorch backend and the saved ``.keras`` file loads under any of them.
"""

from __future__ import annotations

import inspect

import keras
from keras import layers, ops

PACKAGE = "denoise"


@keras.saving.register_keras_serializable(package=PACKAGE)
class NoiseLevelMap(layers.Layer):
    """Broadcast a per-image noise level of shape (B, 1) to a map shaped like the image's (B, H, W, 1)."""

    def call(self, image, sigma):
        ones = ops.ones_like(image[..., :1])
        return ones * ops.reshape(ops.cast(sigma, image.dtype), (-1, 1, 1, 1))


@keras.saving.register_keras_serializable(package=PACKAGE)
class PixelUnshuffle(layers.Layer):
    """Fold each factor x factor block of pixels into channels (space-to-depth)."""

    def __init__(self, factor: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, x):
        return ops.space_to_depth(x, self.factor)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


@keras.saving.register_keras_serializable(package=PACKAGE)
class PixelShuffle(layers.Layer):
    """Unfold channels back into factor x factor blocks of pixels (depth-to-space)."""

    def __init__(self, factor: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, x):
        return ops.depth_to_space(x, self.factor)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}



@keras.saving.register_keras_serializable(package=PACKAGE)
class ToPhases(layers.Layer):
    """The four half-size images of every other pixel, stacked on the batch axis phase by phase
    (B, H, W, C) -> (4B, H/2, W/2, C): noise that spans neighbouring pixels is close to
    independent within each (see noise/shuffle.py)."""

    def call(self, x):
        shape = ops.shape(x)
        x = ops.reshape(x, (shape[0], shape[1] // 2, 2, shape[2] // 2, 2, shape[3]))
        x = ops.transpose(x, (2, 4, 0, 1, 3, 5))
        return ops.reshape(x, (4 * shape[0], shape[1] // 2, shape[2] // 2, shape[3]))


@keras.saving.register_keras_serializable(package=PACKAGE)
class PhaseLevels(layers.Layer):
    """A (B, 1) noise level repeated for the four phases of each image, as :class:`ToPhases` stacks them."""

    def call(self, x):
        return ops.tile(x, (4, 1))


@keras.saving.register_keras_serializable(package=PACKAGE)
class FromPhases(layers.Layer):
    """The inverse of :class:`ToPhases`: (4B, h, w, C) -> (B, 2h, 2w, C)."""

    def call(self, x):
        shape = ops.shape(x)
        x = ops.reshape(x, (2, 2, shape[0] // 4, shape[1], shape[2], shape[3]))
        x = ops.transpose(x, (2, 3, 0, 4, 1, 5))
        return ops.reshape(x, (shape[0] // 4, 2 * shape[1], 2 * shape[2], shape[3]))


def on_phases(network: keras.Model) -> keras.Model:
    """A model that runs ``network`` on the four phases of its input and puts them back: what
    ``denoise adapt`` writes for noise that spans several pixels."""
    channels = network.inputs[0].shape[-1]
    image = keras.Input((None, None, channels), name="image")
    phases = ToPhases(name="to_phases")(image)
    if len(network.inputs) > 1:
        sigma = keras.Input((1,), name="sigma")
        output = network({"image": phases, "sigma": PhaseLevels(name="phase_levels")(sigma)})
        return keras.Model([image, sigma], FromPhases(name="from_phases")(output), name="on_phases")
    return keras.Model(image, FromPhases(name="from_phases")(network(phases)), name="on_phases")

def dense_autoencoder(latent_dim: int = 64, size: int = 28, channels: int = 1) -> keras.Model:
    """The tutorial's dense autoencoder: Flatten -> Dense(latent, relu) -> Dense(sigmoid) -> Reshape.

    It only accepts ``size`` x ``size`` images; ``denoise run`` feeds it tiles of that size.
    """
    inputs = keras.Input((size, size, channels), name="image")
    latent = layers.Dense(latent_dim, activation="relu")(layers.Flatten()(inputs))
    encoder = keras.Model(inputs, latent, name="encoder")

    latent_in = keras.Input((latent_dim,), name="latent")
    pixels = layers.Dense(size * size * channels, activation="sigmoid")(latent_in)
    decoder = keras.Model(latent_in, layers.Reshape((size, size, channels))(pixels), name="decoder")
    return keras.Model(inputs, decoder(encoder(inputs)), name="dense_autoencoder")


def conv_autoencoder(filters: int = 16, channels: int = 1) -> keras.Model:
    """The tutorial's convolutional autoencoder, fully convolutional so it takes any size.

    Encoder: Conv2D(filters) then Conv2D(filters / 2), 3x3, stride 2, relu (16 and 8 in the
    tutorial). Decoder: the mirror with Conv2DTranspose, then a 3x3 Conv2D to ``channels`` with
    a sigmoid. Sizes must be multiples of 4 (the pipeline pads).
    """
    narrow = max(1, filters // 2)
    inputs = keras.Input((None, None, channels), name="image")
    x = layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu")(inputs)
    x = layers.Conv2D(narrow, 3, strides=2, padding="same", activation="relu")(x)
    encoder = keras.Model(inputs, x, name="encoder")

    code = keras.Input((None, None, narrow), name="code")
    y = layers.Conv2DTranspose(narrow, 3, strides=2, padding="same", activation="relu")(code)
    y = layers.Conv2DTranspose(filters, 3, strides=2, padding="same", activation="relu")(y)
    y = layers.Conv2D(channels, 3, padding="same", activation="sigmoid")(y)
    decoder = keras.Model(code, y, name="decoder")
    return keras.Model(inputs, decoder(encoder(inputs)), name="conv_autoencoder")


def _conv_block(x, filters: int, convs: int, name: str):
    """``convs`` 3x3 convolutions with ReLU and a residual shortcut around them."""
    shortcut = x
    for index in range(convs):
        activation = "relu" if index < convs - 1 else None
        x = layers.Conv2D(filters, 3, padding="same", activation=activation, name=f"{name}_conv{index}")(x)
    if shortcut.shape[-1] == filters:
        x = layers.Add(name=f"{name}_add")([shortcut, x])
    return layers.Activation("relu", name=f"{name}_relu")(x)


def _level(x, filters: int, blocks: int, repeats: int, name: str):
    """``repeats`` residual blocks in a row; the first keeps the name a one-block level has, so a
    model with more repeats can start from one with fewer (:func:`grow_from`)."""
    x = _conv_block(x, filters, blocks, name)
    for repeat in range(1, repeats):
        x = _conv_block(x, filters, blocks, f"{name}_{repeat}")
    return x


def unet(
    channels: int = 1,
    filters: int = 32,
    depth: int = 3,
    blocks: int = 2,
    noise_level_input: bool = True,
    repeats: int = 1,
) -> keras.Model:
    """Residual U-Net denoising autoencoder with a noise-level map input.

    - Pixel-unshuffle by 2 at the input: every convolution runs at quarter resolution at most,
      which buys four times the compute for the same FLOPs (as FFDNet does).
    - Encoder: ``depth`` levels of residual conv blocks, each level downsampled by a strided
      convolution and doubling the filters; decoder: transposed convolutions back up, with
      additive skip connections from the encoder level of the same size; ``repeats`` residual
      blocks of ``blocks`` convolutions at each level.
    - Residual output: the network predicts the noise, which is subtracted from the input;
      it trains much faster than predicting the clean image.
    Sizes must be multiples of 2 ** depth (the pipeline pads).
    """
    image = keras.Input((None, None, channels), name="image")
    inputs = [image]
    x = image
    if noise_level_input:
        sigma = keras.Input((1,), name="sigma")
        inputs.append(sigma)
        x = layers.Concatenate(name="with_noise_map")([image, NoiseLevelMap(name="noise_map")(image, sigma)])
    x = PixelUnshuffle(2, name="unshuffle")(x)
    x = layers.Conv2D(filters, 3, padding="same", activation="relu", name="head")(x)

    skips = []
    for level in range(depth - 1):
        width = filters * 2**level
        x = _level(x, width, blocks, repeats, f"down{level}")
        skips.append(x)
        x = layers.Conv2D(2 * width, 2, strides=2, name=f"downsample{level}")(x)
    x = _level(x, filters * 2 ** (depth - 1), blocks, repeats, "bottleneck")
    for level in reversed(range(depth - 1)):
        width = filters * 2**level
        x = layers.Conv2DTranspose(width, 2, strides=2, name=f"upsample{level}")(x)
        x = layers.Add(name=f"skip{level}")([x, skips[level]])
        x = _level(x, width, blocks, repeats, f"up{level}")

    x = layers.Conv2D(4 * channels, 3, padding="same", name="tail")(x)
    noise = PixelShuffle(2, name="shuffle")(x)
    clean = layers.Subtract(name="residual")([image, noise])
    return keras.Model(inputs, clean, name="unet")


def unet_args(model: keras.Model) -> dict:
    """The :func:`unet` arguments that built ``model``, read off its layers' names and shapes."""
    names = [layer.name for layer in model.layers]
    if "head" not in names or "tail" not in names:
        raise ValueError(f"{model.name} is not a unet")
    return {
        "channels": model.inputs[0].shape[-1],
        "filters": model.get_layer("head").filters,
        "depth": sum(name.startswith("downsample") for name in names) + 1,
        "blocks": sum(name.startswith("down0_conv") for name in names) or sum(
            name.startswith("bottleneck_conv") for name in names),
        "noise_level_input": len(model.inputs) == 2,
        "repeats": 1 + sum(name.startswith("bottleneck_") and name.endswith("_relu") and name != "bottleneck_relu"
                           for name in names),
    }


def grow_from(source: keras.Model, target: keras.Model) -> list[str]:
    """Give ``target`` the weights of ``source``, a unet like it with fewer ``repeats``, and start
    each residual block that ``source`` lacks as an identity: its last convolution is zeroed, so
    the block adds nothing to its (non-negative, post-ReLU) input and ``target`` computes what
    ``source`` does until training moves it. Returns the names of the added blocks.

    Raises ValueError when a layer of ``source`` is missing from ``target`` or differs in shape.
    """
    layers_of_target = {layer.name: layer for layer in target.layers}
    for layer in source.layers:
        match = layers_of_target.get(layer.name)
        if match is None or [w.shape for w in match.weights] != [w.shape for w in layer.weights]:
            raise ValueError(f"{target.name} cannot grow from {source.name}: layer {layer.name} differs")
        match.set_weights(layer.get_weights())
    known = {layer.name for layer in source.layers}
    added = sorted({layer.name.rsplit("_conv", 1)[0] for layer in target.layers
                    if layer.name not in known and "_conv" in layer.name})
    last = unet_args(target)["blocks"] - 1
    for block in added:
        for weight in layers_of_target[f"{block}_conv{last}"].weights:
            weight.assign(ops.zeros(weight.shape, weight.dtype))
    return added


def mean_of(members: list[keras.Model], channels: int = 3) -> keras.Model:
    """A model whose output is the mean of its members' outputs: an ensemble of denoisers.

    Members take an image and a noise level; a grey member given a colour image runs on each
    channel alone. Models trained apart make different errors, so the mean beats each of them:
    on McMaster18 at sigma 25 the mean of ``color`` and ``gray`` run channel by channel gains
    0.7 dB over either alone.
    """
    if not members:
        raise ValueError("mean_of needs at least one member")
    image = keras.Input((None, None, channels), name="image")
    sigma = keras.Input((1,), name="sigma")
    outputs = []
    for index, member in enumerate(members):
        member = keras.Model(member.inputs, member.output, name=f"member{index}")  # names must be unique
        width = member.inputs[0].shape[-1]
        if len(member.inputs) != 2:
            raise ValueError(f"{member.name}: a member needs a noise-level input")
        if width == channels:
            outputs.append(member({"image": image, "sigma": sigma}))
        elif width == 1:
            planes = [member({"image": image[..., channel : channel + 1], "sigma": sigma}) for channel in range(channels)]
            outputs.append(layers.Concatenate()(planes) if channels > 1 else planes[0])
        else:
            raise ValueError(f"{member.name}: {width} channels cannot serve {channels}-channel images")
    mean = layers.Average(name="mean")(outputs) if len(outputs) > 1 else outputs[0]
    return keras.Model([image, sigma], mean, name="mean_of")


# ITU-R BT.601, as Pillow's convert("L"): the grey a camera's monochrome mode or a user's conversion gives.
LUMA = (0.299, 0.587, 0.114)


def _luma(image):
    return ops.sum(image * ops.convert_to_tensor(LUMA, image.dtype), axis=-1, keepdims=True)


@keras.saving.register_keras_serializable(package=PACKAGE)
class Luma(layers.Layer):
    """The luma (B, H, W, 1) of RGB images (B, H, W, 3)."""

    def call(self, image):
        return _luma(image)


@keras.saving.register_keras_serializable(package=PACKAGE)
class MoveLuma(layers.Layer):
    """RGB images whose luma is moved ``weight`` of the way to a grey image's, their chroma kept:
    the same value is added to R, G and B, which moves the luma by that value (the weights sum to 1)."""

    def __init__(self, weight: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        self.weight = weight

    def call(self, colour, grey):
        return colour + self.weight * (grey - _luma(colour))

    def get_config(self):
        return {**super().get_config(), "weight": self.weight}


def luma_blend(colour: keras.Model, grey: keras.Model, weight: float, level: float = 1.0) -> keras.Model:
    """``colour``'s output with its luma moved ``weight`` of the way to ``grey``'s denoising of the
    input's luma, ``grey`` told ``level`` times the level: a grey denoiser's luma with a colour
    model's chroma. Both take an image and a noise level.

    On real camera noise a white-noise grey model told more than the luma's own level cleans the
    luma better than the camera-noise colour model does, and the colour model keeps the chroma
    the grey one cannot see (figures in docs/real_noise.md).
    """
    for member, width in ((colour, 3), (grey, 1)):
        if len(member.inputs) != 2 or member.inputs[0].shape[-1] != width:
            raise ValueError(f"{member.name}: a luma blend needs a {width}-channel member with a noise-level input")
    if not 0 < weight <= 1 or level <= 0:
        raise ValueError(f"a luma blend needs a weight in (0, 1] and a positive level factor, not {weight}, {level}")
    image = keras.Input((None, None, 3), name="image")
    sigma = keras.Input((1,), name="sigma")
    colour = keras.Model(colour.inputs, colour.output, name="colour")
    grey = keras.Model(grey.inputs, grey.output, name="grey")
    cleaned = colour({"image": image, "sigma": sigma})
    luma = grey({"image": Luma()(image), "sigma": layers.Rescaling(level)(sigma)})
    return keras.Model([image, sigma], MoveLuma(weight)(cleaned, luma), name="luma_blend")


PRECISIONS = ("float32", "bfloat16")


def computing_in(model: keras.Model, precision: str) -> keras.Model:
    """``model`` with its inner layers computed in ``precision``, for inference.

    ``bfloat16`` runs every layer between the first and the last convolution of each network
    in bfloat16 with float32 weights; those two and the layers outside them stay float32:
    bfloat16 keeps 8 bits of mantissa, so it would round a bright input pixel by up to a grey
    level before the network sees it, and the predicted noise likewise. Inside, the features
    stay bfloat16 from layer to layer (no casts between a convolution and its sum or ReLU),
    which halves their memory. gray-large runs 1.85 times as fast on a CPU with AVX512-BF16
    (0.37 against 0.69 s/MP on an AMD EPYC), for 0.005 dB on Set12 at sigma 25; far slower
    on a CPU without it.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "float32":
        return model
    inner = set()
    for network in _networks(model):
        convolutions = [index for index, layer in enumerate(network.layers)
                        if isinstance(layer, (layers.Conv2D, layers.Conv2DTranspose))]
        if not convolutions:  # a mean of networks: its members have them
            continue
        inner.update(id(layer) for layer in network.layers[convolutions[0] + 1 : convolutions[-1]]
                     if not isinstance(layer, keras.Model))

    def clone(layer):
        config = layer.get_config()
        if id(layer) in inner:
            config["dtype"] = f"mixed_{precision}"
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone, recursive=True)
    copy.set_weights(model.get_weights())
    return copy


def _networks(model: keras.Model):
    """``model`` and every model nested in it."""
    yield model
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _networks(layer)


ARCHITECTURES = {
    "dense": dense_autoencoder,
    "conv": conv_autoencoder,
    "unet": unet,
}


def build(arch: str, **kwargs) -> keras.Model:
    """Build an architecture by name with its keyword arguments (e.g. ``filters=4``).

    Raises ValueError for an unknown architecture, an argument it does not take, or a size
    argument below 1.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    accepted = inspect.signature(ARCHITECTURES[arch]).parameters
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(f"{arch} takes no {', '.join(unknown)}; it takes {', '.join(accepted)}")
    small = [key for key, value in kwargs.items() if isinstance(value, int) and not isinstance(value, bool) and value < 1]
    if small:
        raise ValueError(f"{arch}: {', '.join(small)} must be at least 1")
    return ARCHITECTURES[arch](**kwargs)
