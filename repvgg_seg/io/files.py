"""Output files that are complete or absent: every file the project writes
(training checkpoints through mmengine's file backend, deploy checkpoints and
configs, ONNX models, caches) goes to a temporary file in the target's folder
and is renamed into place, so a crash, a full disk or a failed check never
leaves a partial or corrupt file, and an existing file keeps its content
until the new one is complete."""
import errno
import json
import os
import os.path as osp
import tempfile
from contextlib import contextmanager
from typing import Dict, Iterator, Optional, Sequence

from mmengine.utils import mkdir_or_exist


def _nearest_existing(folder: str) -> str:
    while not osp.exists(folder):
        folder = osp.dirname(folder)
    return folder


def check_writable(paths: Sequence[str], force: bool) -> None:
    """Refuse existing outputs (unless ``force``) and outputs whose folder
    cannot be made. Missing folders are fine: they are created when the
    outputs are written (:func:`temp_path`), as mmseg's tools do."""
    for path in paths:
        if osp.exists(path) and not force:
            raise FileExistsError(
                f'{path} already exists; pass --force to overwrite it')
        if osp.isdir(path):
            raise FileExistsError(f'{path} is a directory')
        folder = osp.dirname(osp.abspath(path))
        existing = _nearest_existing(folder)
        if not osp.isdir(existing):
            raise NotADirectoryError(
                f'cannot write {path}: {existing} is a file, not a folder')
        if not os.access(existing, os.W_OK):
            raise PermissionError(f'output folder is not writable: '
                                  f'{existing}')


def temp_path(path: str) -> str:
    """A new empty temporary file in ``path``'s folder, with its suffix (the
    final write is a rename, atomic on one file system)."""
    folder = osp.dirname(osp.abspath(path))
    mkdir_or_exist(folder)
    base, ext = osp.splitext(osp.basename(path))
    fd, tmp = tempfile.mkstemp(prefix=f'.{base}.', suffix='.partial' + ext,
                               dir=folder)
    os.close(fd)
    return tmp


def publish(tmp: str, path: str) -> None:
    """Rename a finished temporary file into place, with the permissions a
    plain ``open(path, 'w')`` would give (mkstemp's are 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def remove_quietly(path: Optional[str]) -> None:
    if path and osp.exists(path):
        try:
            os.remove(path)
        except OSError:
            pass


def write_error(exc: OSError, path: str) -> OSError:
    """An OSError that names the file the user asked for (not the temporary
    one) and the reason in words."""
    reason = {errno.ENOSPC: 'the disk is full',
              errno.EDQUOT: 'the disk quota is exceeded'}.get(
                  exc.errno, exc.strerror or str(exc))
    return OSError(exc.errno, f'could not write {path}: {reason}; earlier '
                   'files are untouched')


def write_bytes(data: bytes, tmp: str, path: str) -> None:
    """Write ``data`` to the temporary file ``tmp`` (flushed to disk); errors
    name ``path``, the file it will become."""
    try:
        with open(tmp, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise write_error(exc, path) from None


def atomic_write_bytes(data: bytes, path: str) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename.

    On failure (disk full, no permission) the temporary file is removed,
    ``path`` keeps its previous content, and the error names the file.
    """
    path = os.fspath(path)
    try:
        tmp = temp_path(path)
    except OSError as exc:
        raise write_error(exc, path) from None
    try:
        write_bytes(data, tmp, path)
        publish(tmp, path)
        tmp = None
    finally:
        remove_quietly(tmp)


def write_json(obj, path: str, **kwargs) -> None:
    """``obj`` as JSON (indent 2 unless given) to ``path``, atomically."""
    kwargs.setdefault('indent', 2)
    atomic_write_bytes((json.dumps(obj, **kwargs) + '\n').encode(), path)


@contextmanager
def staged_outputs(paths: Sequence[str]) -> Iterator[Dict[str, str]]:
    """Outputs that appear together when a block succeeds, or not at all.

    Yields ``{final path: temporary path}`` (temporary files next to their
    targets, with their suffixes). A file that a writer creates beside
    another one can be added (``staged[final] = tmp``). When the block
    ends normally the files are renamed into place in the dict's order;
    when it raises, every temporary file is removed.
    """
    staged = {}
    try:
        for path in paths:
            staged[path] = temp_path(path)
        yield staged
        for path in list(staged):
            publish(staged[path], path)
            del staged[path]
    finally:
        for tmp in staged.values():
            remove_quietly(tmp)
