"""Models for every tool: a config (and a checkpoint) built and loaded the
same way everywhere (:mod:`.build`), and the forward that is timed and
exported (:class:`LogitsModule`)."""
from .build import (LogitsModule, build_model, checked_shape,
                    default_input_shape, is_deploy_config, is_segmentor,
                    load_model, load_weights)

__all__ = [
    'LogitsModule', 'build_model', 'checked_shape', 'default_input_shape',
    'is_deploy_config', 'is_segmentor', 'load_model', 'load_weights'
]
