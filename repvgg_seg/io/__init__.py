"""Reading and writing files safely: checkpoints (no code execution on
load), atomic outputs, state dicts."""
from .checkpoint import (TRUST_ENV, load_checkpoint_file,
                         register_safe_loader, trust_checkpoints,
                         trusted_checkpoints)
from .files import (atomic_write_bytes, check_writable, staged_outputs,
                    write_json)
from .state_dict import (extract_state_dict, load_state_dict_strict,
                         state_dict_differences, strip_prefix)

__all__ = [
    'TRUST_ENV', 'load_checkpoint_file', 'register_safe_loader',
    'trust_checkpoints', 'trusted_checkpoints', 'atomic_write_bytes',
    'check_writable', 'staged_outputs', 'write_json', 'extract_state_dict',
    'load_state_dict_strict', 'state_dict_differences', 'strip_prefix'
]
