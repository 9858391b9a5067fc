"""The RepVGG archs: the paper's table (depths, width multipliers, grouped
layers, SE) as timm's byobnet keeps its model configs, and the resolution of
an arch name or a custom arch dict into its settings."""
from typing import Dict, Union

from ..errors import ConfigError, check_choice

# The official code groups the 3x3 (and 1x1) convs of layers 2, 4, ..., 26,
# counting layers across stages with stage1's first block as layer 1 (the stem
# is layer 0). The paper says "3rd, 5th, ..., 27th layer", counting the stem.
GROUPED_LAYERS = tuple(range(2, 27, 2))


def _arch(num_blocks, width_factor, groups=1, use_se=False):
    return dict(
        num_blocks=num_blocks,
        width_factor=width_factor,
        group_layer_map={i: groups for i in GROUPED_LAYERS} if groups > 1
        else {},
        use_se=use_se)


_A = (2, 4, 14, 1)
_B = (4, 6, 16, 1)

# The paper's Table 3 (depths; multipliers a for stages 1-4 and b for stage 5)
# and the g2/g4 variants of Sect. 3.4; D2se from the official repository.
ARCH_SETTINGS: Dict[str, dict] = {
    'A0': _arch(_A, (0.75, 0.75, 0.75, 2.5)),
    'A1': _arch(_A, (1, 1, 1, 2.5)),
    'A2': _arch(_A, (1.5, 1.5, 1.5, 2.75)),
    'B0': _arch(_B, (1, 1, 1, 2.5)),
    'B1': _arch(_B, (2, 2, 2, 4)),
    'B1g2': _arch(_B, (2, 2, 2, 4), groups=2),
    'B1g4': _arch(_B, (2, 2, 2, 4), groups=4),
    'B2': _arch(_B, (2.5, 2.5, 2.5, 5)),
    'B2g2': _arch(_B, (2.5, 2.5, 2.5, 5), groups=2),
    'B2g4': _arch(_B, (2.5, 2.5, 2.5, 5), groups=4),
    'B3': _arch(_B, (3, 3, 3, 5)),
    'B3g2': _arch(_B, (3, 3, 3, 5), groups=2),
    'B3g4': _arch(_B, (3, 3, 3, 5), groups=4),
    'D2se': _arch((8, 14, 24, 1), (2.5, 2.5, 2.5, 5), use_se=True),
}

PAPER_ARCHS = tuple(a for a in ARCH_SETTINGS if a != 'D2se')

# the keys a custom arch dict may have
_ARCH_KEYS = ('num_blocks', 'width_factor', 'group_layer_map', 'use_se')


def resolve_arch(arch: Union[str, dict]) -> dict:
    """Validate an arch name or a custom arch dict and return its settings."""
    if isinstance(arch, str):
        check_choice('RepVGG arch', arch, ARCH_SETTINGS, ConfigError,
                     hint='or a dict with num_blocks and width_factor')
        return dict(ARCH_SETTINGS[arch])
    if not isinstance(arch, dict):
        raise ConfigError(f'arch must be a str or dict, got {type(arch)}')
    missing = {'num_blocks', 'width_factor'} - set(arch)
    if missing:
        raise ConfigError(f'a custom RepVGG arch dict needs {sorted(missing)}')
    unknown = set(arch) - set(_ARCH_KEYS)
    if unknown:
        raise ConfigError(f'unknown keys in the RepVGG arch dict: '
                          f'{sorted(unknown)}')
    if len(arch['num_blocks']) != 4 or len(arch['width_factor']) != 4:
        raise ConfigError('num_blocks and width_factor need 4 entries (stages '
                          f'1-4), got {arch["num_blocks"]} and '
                          f'{arch["width_factor"]}')
    if any(int(n) < 1 for n in arch['num_blocks']):
        raise ConfigError(f'every stage needs a block: {arch["num_blocks"]}')
    return {'group_layer_map': {}, 'use_se': False, **arch}
