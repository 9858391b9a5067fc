"""Segment a user's images, folders, path lists and videos
(``tools/infer.py``), on any engine, and write overlays and label maps.

The model is :class:`~repvgg_seg.inference.RepVGGSegInferencer`'s: its
pipeline, batching (``collate``), ``test_step`` and engine. Around it, what
a long job over many inputs needs:

* **throughput**: the next batch is decoded and preprocessed in a thread
  while the current one runs (OpenCV and the engines release the GIL), and
  outputs are drawn and written in another; with the OpenVINO engine and
  ``streams``, a batch's images run on that many requests in flight;
* **resume**: outputs are written atomically and an input whose outputs all
  exist is skipped, so a killed run over 100k frames continues where it
  stopped (``force`` redoes them);
* **sharding**: launched by ``torchrun`` (``tools/dist_infer.sh``), rank
  *r* of *n* takes every *n*-th input, so each output is written by exactly
  one rank;
* **bad inputs**: an unreadable or truncated image, a non-image file in a
  list, a video that cannot be opened are skipped with one line each and
  listed at the end; the job goes on with the rest.
"""
import os
import os.path as osp
import queue
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterator, List, Optional, Tuple

import numpy as np
import torch
from mmengine.logging import print_log
from mmengine.utils import ProgressBar

from ..errors import InputError
from ..io.files import publish, remove_quietly, temp_path
from .outputs import OutputWriter, check_out_dir, encode_image
from .sources import Item, is_video, resolve_inputs, shard


@dataclass
class InferenceOptions:
    """How ``tools/infer.py`` runs (see its ``--help``)."""
    out_dir: str = 'work_dirs/infer'
    engine: str = 'torch'
    precision: str = 'fp32'
    device: Optional[str] = None
    batch_size: int = 1
    streams: Optional[int] = None
    threads: Optional[int] = None
    opacity: float = 0.5
    with_labels: bool = False
    legend: bool = False
    save_vis: bool = True
    save_pred: Optional[str] = None
    force: bool = False
    output_fourcc: str = 'mp4v'
    output_fps: Optional[float] = None
    cfg_options: Optional[dict] = None


@dataclass
class InferenceReport:
    """What a run did: outputs written, inputs found done, inputs skipped
    (with the reason), the time and the images/s of the images run."""
    done: int = 0
    existing: int = 0
    skipped: List[Tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    rank: int = 0
    world_size: int = 1

    @property
    def images_per_s(self) -> float:
        return self.done / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict:
        return dict(done=self.done, existing=self.existing,
                    skipped=[dict(input=p, reason=r)
                             for p, r in self.skipped],
                    seconds=round(self.seconds, 2),
                    images_per_s=round(self.images_per_s, 2),
                    rank=self.rank, world_size=self.world_size)


def dist_rank() -> Tuple[int, int]:
    """``(rank, world_size)`` of a ``torchrun`` launch (``(0, 1)``
    otherwise): sharding needs no process group."""
    return (int(os.environ.get('RANK', 0)),
            int(os.environ.get('WORLD_SIZE', 1)))


def truncated(data: bytes, path: str) -> bool:
    """Whether a JPEG or PNG file's bytes end before its end marker
    (decoders often return a partly grey image for those instead of an
    error)."""
    head = data[:8]
    if head.startswith(b'\xff\xd8'):
        return b'\xff\xd9' not in data[-1024:]
    if head.startswith(b'\x89PNG'):
        return b'IEND' not in data[-64:]
    return False


def read_image(path: str) -> np.ndarray:
    """The image as mmseg's ``LoadImageFromFile`` decodes it (BGR, OpenCV),
    or :class:`InputError` saying why it cannot be used."""
    import mmcv
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except OSError as exc:
        raise InputError(f'cannot read {path}: {exc.strerror or exc}') \
            from None
    if not data:
        raise InputError(f'{path} is empty')
    if truncated(data, path):
        raise InputError(f'{path} is truncated')
    image = mmcv.imfrombytes(data)
    if image is None:
        raise InputError(f'{path} is not a readable image')
    return image


class Prefetcher:
    """Runs ``produce()`` (a generator) in a thread, ``depth`` items
    ahead of the consumer."""

    _END = object()

    def __init__(self, produce, depth: int = 2):
        self.queue = queue.Queue(maxsize=depth)
        self.error = None
        self.thread = threading.Thread(target=self._run, args=(produce, ),
                                       daemon=True)
        self.thread.start()

    def _run(self, produce) -> None:
        try:
            for item in produce():
                self.queue.put(item)
        except BaseException as exc:  # re-raised in the consumer
            self.error = exc
        finally:
            self.queue.put(self._END)

    def __iter__(self):
        while True:
            item = self.queue.get()
            if item is self._END:
                if self.error is not None:
                    raise self.error
                return
            yield item


class InferenceJob:
    """One ``tools/infer.py`` run (see the module docstring)."""

    def __init__(self, config: str, weights: Optional[str],
                 options: InferenceOptions):
        from .inferencer import RepVGGSegInferencer
        check_out_dir(options.out_dir)
        if options.batch_size < 1:
            raise InputError(f'--batch-size must be >= 1, got '
                             f'{options.batch_size}')
        self.options = options
        self.inferencer = RepVGGSegInferencer(
            model=config, weights=weights, engine=options.engine,
            precision=options.precision, streams=options.streams,
            threads=options.threads, device=options.device,
            cfg_options=options.cfg_options)
        self.model = self.inferencer.model
        self.writer = OutputWriter(
            options.out_dir, self.model.dataset_meta,
            save_vis=options.save_vis, save_pred=options.save_pred,
            opacity=options.opacity, with_labels=options.with_labels,
            legend=options.legend)
        self.rank, self.world_size = dist_rank()

    # the model

    def predict(self, images: List[np.ndarray]) -> List[np.ndarray]:
        """Label maps (train ids, HxW) of BGR images, one batch."""
        samples = [self.inferencer.pipeline(image) for image in images]
        data = self.inferencer.collate_fn(samples)
        with torch.no_grad():
            results = self.model.test_step(data)
        return [r.pred_sem_seg.data[0].cpu().numpy().astype(np.uint8)
                for r in results]

    # images

    def _batches(self, items: List[Item], report: InferenceReport
                 ) -> Iterator[List[Tuple[Item, np.ndarray]]]:
        batch = []
        for item in items:
            try:
                batch.append((item, read_image(item.path)))
            except InputError as exc:
                report.skipped.append((item.path, str(exc)))
                print_log(f'skipped: {exc}', logger='current', level=30)
                continue
            if len(batch) == self.options.batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    def run_images(self, items: List[Item],
                   report: InferenceReport) -> None:
        todo = [item for item in shard(items, self.rank, self.world_size)
                if self.options.force or not self.writer.done(item.name)]
        report.existing += len(shard(items, self.rank,
                                     self.world_size)) - len(todo)
        if report.existing:
            print_log(f'{report.existing} inputs already have their outputs '
                      f'in {self.options.out_dir}: skipped (--force redoes '
                      'them)', logger='current')
        if not todo:
            return
        bar = ProgressBar(len(todo), file=sys.stderr)
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = []
            for batch in Prefetcher(lambda: self._batches(todo, report)):
                labels = self.predict([image for _, image in batch])
                for (item, image), label in zip(batch, labels):
                    pending.append(pool.submit(self.writer.write, item.name,
                                               image, label))
                for _ in batch:
                    bar.update()
                report.done += len(batch)
                # bound the memory held by queued writes
                while len(pending) > 2 * self.options.batch_size:
                    pending.pop(0).result()
            for future in pending:
                future.result()
        sys.stderr.write('\n')
        report.seconds += time.perf_counter() - start

    # videos

    def video_path(self, video: str) -> str:
        stem = osp.splitext(osp.basename(video))[0]
        return osp.join(self.options.out_dir, stem + '.mp4')

    def run_video(self, video: str, report: InferenceReport) -> None:
        """The video with the overlay drawn on each frame (same size and
        fps; ``--output-fourcc``), and per-frame label maps
        (``pred/<video>/<frame>.png``) when asked. The video is one unit:
        it is written to a temporary file and renamed when complete."""
        import cv2
        out = self.video_path(video)
        if self.rank != 0:
            return  # one video is one rank's job
        if osp.isfile(out) and not self.options.force:
            report.existing += 1
            print_log(f'{out} exists: skipped (--force redoes it)',
                      logger='current')
            return
        capture = cv2.VideoCapture(video)
        if not capture.isOpened():
            report.skipped.append((video, 'cannot be opened as a video'))
            print_log(f'skipped: {video} cannot be opened as a video',
                      logger='current', level=30)
            return
        fps = self.options.output_fps or capture.get(cv2.CAP_PROP_FPS) or 25
        frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
        tmp = temp_path(out)
        # OpenCV picks the container from the suffix
        tmp = osp.splitext(tmp)[0] + '.tmp.mp4'
        writer = None
        stem = osp.splitext(osp.basename(video))[0]
        bar = ProgressBar(frames, file=sys.stderr) if frames else None
        start = time.perf_counter()
        count = 0

        def read_frames():
            batch = []
            while True:
                ok, frame = capture.read()
                if not ok:
                    break
                batch.append(frame)
                if len(batch) == self.options.batch_size:
                    yield batch
                    batch = []
            if batch:
                yield batch

        try:
            for batch in Prefetcher(read_frames):
                labels = self.predict(batch)
                for frame, label in zip(batch, labels):
                    drawn = self.writer.overlay(frame, label)
                    if writer is None:
                        height, width = drawn.shape[:2]
                        writer = cv2.VideoWriter(
                            tmp, cv2.VideoWriter_fourcc(
                                *self.options.output_fourcc), fps,
                            (width, height))
                        if not writer.isOpened():
                            raise InputError(
                                f'cannot write a {self.options.output_fourcc}'
                                f' video to {out}')
                    writer.write(drawn)
                    if self.options.save_pred:
                        from ..io.files import atomic_write_bytes
                        atomic_write_bytes(
                            encode_image(self.writer.label_map(label)),
                            osp.join(self.options.out_dir, 'pred', stem,
                                     f'{count:06d}.png'))
                    count += 1
                    if bar is not None:
                        bar.update()
            if writer is None:
                report.skipped.append((video, 'has no frames'))
                return
            writer.release()
            writer = None
            publish(tmp, out)
        finally:
            capture.release()
            if writer is not None:
                writer.release()
            remove_quietly(tmp)
        if bar is not None:
            sys.stderr.write('\n')
        report.done += count
        report.seconds += time.perf_counter() - start
        print_log(f'wrote {out} ({count} frames at {fps:g} fps)',
                  logger='current')

    def run(self, source: str) -> InferenceReport:
        report = InferenceReport(rank=self.rank, world_size=self.world_size)
        threads = torch.get_num_threads()
        if self.options.engine in ('onnxruntime', 'openvino'):
            # the runtime has its own threads on every core; torch's, for
            # the pre- and post-processing around it, would only contend
            torch.set_num_threads(1)
        try:
            if is_video(source):
                if not osp.isfile(source):
                    raise FileNotFoundError(f'input not found: {source}')
                self.run_video(source, report)
            else:
                self.run_images(resolve_inputs(source), report)
        finally:
            torch.set_num_threads(threads)
        return report


def run_inference(source: str, config: str, weights: Optional[str],
                  options: Optional[InferenceOptions] = None
                  ) -> InferenceReport:
    """Segment ``source`` (an image, a folder, a list of paths or a video)
    with the config's model and ``weights`` on ``options.engine``; see the
    module docstring. Returns the report; skipped inputs are listed in it
    (and logged), the rest are written."""
    options = options or InferenceOptions()
    job = InferenceJob(config, weights, options)
    report = job.run(source)
    shard_note = (f' (rank {report.rank} of {report.world_size})'
                  if report.world_size > 1 else '')
    print_log(f'segmented {report.done} images in {report.seconds:.1f} s '
              f'({report.images_per_s:.2f} images/s){shard_note}; outputs '
              f'in {options.out_dir}', logger='current')
    return report
