"""Strides and dilations of the backbone's stages 1-4 (paper Sect. 4.3, and
mmseg's per-stage ``strides``/``dilations`` convention), and the
(stride, dilation) of every block they give."""
from typing import Optional, Sequence, Tuple

from ..errors import ConfigError, check_choice

DILATION_MODES = (None, 'last_two_stages', 'fast')
# The per-stage (stages 1-4) strides and dilations each named mode stands
# for; 'fast' dilates only the last layers of stage 3 (see layer_plan).
MODE_STRIDES_DILATIONS = {
    None: ((2, 2, 2, 2), (1, 1, 1, 1)),
    'last_two_stages': ((2, 2, 1, 1), (1, 1, 2, 4)),
    'fast': ((2, 2, 1, 1), (1, 1, 2, 4)),
}
# In 'fast' mode, how many of stage 3's last layers are dilated (the paper's
# "last 5 layers" are these 4 and stage 4's single block).
FAST_DILATED_LAYERS = 4


def _stage_tuple(name: str, value, valid) -> Tuple[int, ...]:
    if (not isinstance(value, (tuple, list)) or len(value) != 4
            or not all(isinstance(v, int) and not isinstance(v, bool)
                       and valid(v) for v in value)):
        raise ConfigError(f'{name} must be 4 ints, one per stage 1-4 (stage '
                          f'0, the stem, always has stride 2): got {value!r}')
    return tuple(value)


def resolve_strides_dilations(dilation: Optional[str] = None,
                              strides: Optional[Sequence[int]] = None,
                              dilations: Optional[Sequence[int]] = None
                              ) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """The strides and dilations of stages 1-4, from a named mode or from
    per-stage tuples (mmseg's ResNet convention), never both.

    Strides must be 1 or 2 (the ImageNet layout has 2; 1 trades resolution
    for compute, as dilated ResNets do); dilations are >= 1.
    """
    check_choice('dilation mode', dilation, DILATION_MODES, ConfigError,
                 hint='or give per-stage strides=... and dilations=...')
    if dilation is not None and (strides is not None
                                 or dilations is not None):
        raise ConfigError(
            f'give either a dilation mode (dilation={dilation!r}) or '
            f'per-stage strides/dilations (got strides={strides!r}, '
            f'dilations={dilations!r}), not both')
    mode_strides, mode_dilations = MODE_STRIDES_DILATIONS[dilation]
    strides = _stage_tuple('strides', mode_strides if strides is None
                           else strides, lambda v: v in (1, 2))
    dilations = _stage_tuple('dilations', mode_dilations if dilations is None
                             else dilations, lambda v: v >= 1)
    return strides, dilations


def layer_plan(num_blocks: Sequence[int],
               strides: Sequence[int],
               dilations: Sequence[int],
               dilation: Optional[str] = None) -> list:
    """(stride, dilation) of every block of stages 1-4.

    Per stage (mmseg's ResNet convention): the first block has the stage's
    stride, every block the stage's dilation (``strides`` and ``dilations``
    as :func:`resolve_strides_dilations` returns them). The named modes are
    shortcuts: ``last_two_stages`` = strides (2, 2, 1, 1), dilations
    (1, 1, 2, 4) (output stride 8, as PSPNet's dilated ResNet); ``fast``
    (``dilation='fast'``): the same strides, but only the last 4 layers of
    stage 3 dilated by 2 and stage 4 by 4 (the paper's "last 5 layers"),
    which no tuple can express.
    """
    plan = []
    for n, stride, rate in zip(num_blocks, strides, dilations):
        plan.append([[stride if i == 0 else 1, rate] for i in range(n)])
    if dilation == 'fast':
        for block in plan[2][:-FAST_DILATED_LAYERS]:
            block[1] = 1
    return plan
