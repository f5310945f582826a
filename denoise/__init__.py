"""denoise: remove noise from images with convolutional denoising autoencoders.

The command line lives in :mod:`denoise.cli`; the batch pipeline in :mod:`denoise.pipeline`.
Importing the package does not import TensorFlow.
"""

__version__ = "0.1.0"
