"""A video's side of an inference job: its frames, read in order together
with the labels of the label maps that an earlier (killed) run wrote, so
that a rerun segments only the frames without one; and the overlay video,
written to a temporary file beside its path and renamed into place when
complete."""
import os.path as osp
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import numpy as np

from ..errors import InputError
from ..io.files import publish, remove_quietly, temp_path


@dataclass
class Frame:
    """One frame of a video: its index, its pixels (BGR), its labels
    (train ids) and whether those were found on disk rather than
    predicted."""
    index: int
    image: np.ndarray
    labels: Optional[np.ndarray] = None
    found: bool = False


def video_stem(path: str) -> str:
    return osp.splitext(osp.basename(path))[0]


def frame_name(video: str, index: int) -> str:
    """The name of a frame's outputs: ``pred/<video>/<frame>.png``."""
    return f'{video_stem(video)}/{index:06d}'


class VideoInput:
    """A video file opened for reading (``opened`` says whether it could
    be), its fps and frame count (0 where the container does not say)."""

    def __init__(self, path: str):
        import cv2
        self.path = path
        self.capture = cv2.VideoCapture(path)
        self.opened = self.capture.isOpened()
        self.fps = self.capture.get(cv2.CAP_PROP_FPS)
        self.frame_count = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT))

    def frames(self, found_labels: Callable[[int], Optional[np.ndarray]]
               ) -> Iterator[Frame]:
        """The frames in order, each with ``found_labels(index)`` where
        those fit its size."""
        index = 0
        while True:
            ok, image = self.capture.read()
            if not ok:
                return
            labels = found_labels(index)
            if labels is not None and labels.shape != image.shape[:2]:
                labels = None  # not this video's: segmented again
            yield Frame(index, image, labels, found=labels is not None)
            index += 1

    def __enter__(self) -> 'VideoInput':
        return self

    def __exit__(self, *exc) -> None:
        self.capture.release()


class VideoOutput:
    """A video written frame by frame to a temporary file beside ``path``
    (``.<name>.<random>.partial.mp4``: OpenCV picks the container by the
    suffix), renamed into place by :meth:`publish`; on leaving the block
    unpublished, the temporary file is removed."""

    def __init__(self, path: str, fourcc: str, fps: float):
        self.path, self.fourcc, self.fps = path, fourcc, fps
        self.tmp = None
        self.writer = None
        self.frames = 0

    def write(self, image: np.ndarray) -> None:
        import cv2
        if self.writer is None:  # the size is the first frame's
            self.tmp = temp_path(self.path)
            height, width = image.shape[:2]
            self.writer = cv2.VideoWriter(
                self.tmp, cv2.VideoWriter_fourcc(*self.fourcc), self.fps,
                (width, height))
            if not self.writer.isOpened():
                raise InputError(f'cannot write a {self.fourcc} video to '
                                 f'{self.path}')
        self.writer.write(image)
        self.frames += 1

    def publish(self) -> None:
        self.writer.release()
        self.writer = None
        publish(self.tmp, self.path)
        self.tmp = None

    def __enter__(self) -> 'VideoOutput':
        return self

    def __exit__(self, *exc) -> None:
        if self.writer is not None:
            self.writer.release()
        remove_quietly(self.tmp)
