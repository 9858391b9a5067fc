"""Atomic checkpoint files: mmengine's local file backend replaced by one
that writes every file (checkpoints, ``last_checkpoint``) to a temporary
file and renames it, so a crash mid-write never leaves a corrupt
``iter_N.pth`` and the previous ones stay intact."""
from mmengine.fileio.backends import LocalBackend, register_backend

from ..io.files import atomic_write_bytes


class AtomicLocalBackend(LocalBackend):
    """mmengine's local backend with atomic ``put`` / ``put_text``."""

    def put(self, obj: bytes, filepath) -> None:
        atomic_write_bytes(obj, filepath)

    def put_text(self, obj: str, filepath, encoding: str = 'utf-8') -> None:
        atomic_write_bytes(obj.encode(encoding), filepath)


def register_atomic_backend() -> None:
    register_backend('local', AtomicLocalBackend, force=True, prefixes='')
