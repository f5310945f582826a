"""``--strength S``: how much to clean, relative to what ``denoise`` would do by default.

The effect is monotonic in S: the larger S, the more of the input is taken away.

- ``S = 1`` (the default) is the default run exactly: nothing below is applied, the outputs are
  the same bytes.
- ``S > 1`` cleans harder: a model with a noise-level input is told :func:`level_factor` =
  ``1 + 0.75 (S - 1)`` times the level it would be told (whatever ``--sigma`` and ``--noise``
  made that), so it takes more for noise: less grain, less fine texture. A model without a
  noise-level input cannot be told more: there S above 1 acts as 1 (with a warning).
- ``S < 1`` keeps some of the grain on purpose: the model runs as by default and a share
  :func:`kept_share` = ``(1 - S) ** 2.5`` of what it removed is put back,
  ``output = (1 - share) * denoised + share * input``. ``S = 0`` returns the input as it is.
  Telling the model a lower level instead is a cliff, not a control: it then leaves noise it
  does not expect and smears it into blotches.

The shapes of both curves were chosen so that S = 0.5 and S = 1.5 stay within a sane distance
of the default's PSNR on Gaussian noise (see docs/results.md, "Strength").
"""

from __future__ import annotations

import numpy as np

DEFAULT = 1.0
HIGHEST = 4.0  # what --strength accepts
SLOPE = 0.75  # the told level's growth per unit of strength above 1 (1.0 lost too much at 1.5)
EXPONENT = 2.5  # the kept share's curve below 1: most of the grain goes by S = 0.5


def check(strength: float) -> float:
    """``strength`` as a float, or ValueError outside 0 to :data:`HIGHEST`."""
    value = float(strength)
    if not 0.0 <= value <= HIGHEST:
        raise ValueError(f"--strength {strength}: choose a value from 0 to {HIGHEST:g}")
    return value


def level_factor(strength: float) -> float:
    """What the model is told, as a multiple of the level the default would tell it: 1 up to
    S = 1, then ``1 + 0.75 (S - 1)`` (1.375 at 1.5, 1.75 at 2)."""
    return 1.0 if strength <= 1.0 else 1.0 + SLOPE * (strength - 1.0)


def kept_share(strength: float) -> float:
    """The share of the input blended back into the denoised output: ``(1 - S) ** 2.5`` below
    S = 1 (1 at S = 0, 0.18 at 0.5, 0.03 at 0.75), 0 from S = 1 on."""
    return 0.0 if strength >= 1.0 else (1.0 - strength) ** EXPONENT


def blend(denoised: np.ndarray, original: np.ndarray, strength: float) -> np.ndarray:
    """``(1 - share) * denoised + share * original`` (share = :func:`kept_share`), in place in
    ``denoised`` where it is float32; ``denoised`` as it is from S = 1 on. At S = 0 the result
    is ``original`` exactly."""
    share = kept_share(strength)
    if share == 0.0:
        return denoised
    result = denoised if denoised.dtype == np.float32 else denoised.astype(np.float32)
    result *= np.float32(1.0 - share)
    result += np.float32(share) * original
    return result
