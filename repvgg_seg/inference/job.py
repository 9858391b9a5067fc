"""Segment a user's images, folders, path lists and videos
(``tools/infer.py``), on any engine, and write overlays and label maps.

The model is :class:`~repvgg_seg.inference.RepVGGSegInferencer`'s: its
pipeline, batching (``collate``), ``test_step`` and engine. Around it, what
a long job over many inputs needs:

* **throughput**: images and video frames go through one pipeline
  (:mod:`.pipeline`): decoded in a thread ahead of the model, batches run
  in worker threads, one more than the engine has requests in flight
  (OpenVINO compiled for its THROUGHPUT hint unless ``streams`` is given),
  so the requests stay busy while another batch is pre- or post-processed
  and written (OpenCV, torch and the runtimes release the GIL); where mmseg's post-processing would only take the argmax, the
  labels come from the engine's graph
  (:meth:`~.predictor.SegmentationPredictor.graph_labels`);
  overlays are JPEG unless asked for PNG (a tenth of the encoding time);
* **resume**: outputs are written atomically and an input whose outputs all
  exist is skipped, so a killed run over 100k frames continues where it
  stopped; so does a video with ``save_pred``: its frames whose label maps
  exist are not segmented again (:mod:`.video`); ``force`` redoes them. A
  rerun removes the temporary files a killed run left for what it writes;
* **sharding**: launched by ``torchrun`` (``tools/dist_infer.sh``), rank
  *r* of *n* takes every *n*-th input, so each output is written by exactly
  one rank, and on GPUs each rank runs on its own (``cuda:LOCAL_RANK``);
* **bad inputs**: an unreadable or truncated image, a non-image file in a
  list, a video that cannot be opened are skipped with one line each and
  listed at the end; the job goes on with the rest.
"""
import os
import os.path as osp
from dataclasses import dataclass, field
from functools import partial
from typing import Iterator, List, Optional, Tuple

import numpy as np
import torch
from mmengine.logging import print_log

from ..errors import InputError
from .outputs import (OutputWriter, check_out_dir, remove_partials,
                      remove_partials_of)
from .pipeline import Progress, batched, run_pipeline
from .predictor import SegmentationPredictor, throughput_streams
from .sources import Item, is_video, read_image, resolve_inputs, shard
from .video import Frame, VideoInput, VideoOutput, frame_name, video_stem


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
    vis_format: str = 'jpg'
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
    device: str = 'cpu'

    @property
    def images_per_s(self) -> float:
        return self.done / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict:
        return dict(done=self.done, existing=self.existing,
                    skipped=[dict(input=p, reason=r)
                             for p, r in self.skipped],
                    seconds=round(self.seconds, 2),
                    images_per_s=round(self.images_per_s, 2),
                    rank=self.rank, world_size=self.world_size,
                    device=self.device)


def dist_rank() -> Tuple[int, int]:
    """``(rank, world_size)`` of a ``torchrun`` launch (``(0, 1)``
    otherwise): sharding needs no process group."""
    return (int(os.environ.get('RANK', 0)),
            int(os.environ.get('WORLD_SIZE', 1)))


class InferenceJob:
    """One ``tools/infer.py`` run (see the module docstring)."""

    def __init__(self, config: str, weights: Optional[str],
                 options: InferenceOptions):
        check_out_dir(options.out_dir)
        if options.batch_size < 1:
            raise InputError(f'--batch-size must be >= 1, got '
                             f'{options.batch_size}')
        self.options = options
        self.predictor = SegmentationPredictor(
            config, weights, engine=options.engine,
            precision=options.precision, device=options.device,
            streams=throughput_streams(options.engine, options.streams),
            threads=options.threads,
            cfg_options=options.cfg_options)
        self.device = self.predictor.device
        self.model = self.predictor.model
        self.writer = OutputWriter(
            options.out_dir, self.model.dataset_meta,
            save_vis=options.save_vis, save_pred=options.save_pred,
            opacity=options.opacity, with_labels=options.with_labels,
            legend=options.legend, vis_suffix='.' + options.vis_format)
        self.rank, self.world_size = dist_rank()

    # the pipeline

    def predict(self, images: List[np.ndarray]) -> List[np.ndarray]:
        """Label maps of a batch of BGR images
        (:meth:`SegmentationPredictor.predict`)."""
        return self.predictor.predict(images)

    def workers(self) -> int:
        """Threads that run batches at once: one more than the engine's
        requests in flight, so that while every request runs, one batch is
        pre- or post-processed (mmseg's pipeline, data preprocessor and
        post-processing, the outputs drawn and written) beside them."""
        return self.predictor.concurrency() + 1

    def _run_pipeline(self, produce, work, finish, ordered: bool) -> None:
        """:func:`run_pipeline` with the engine's workers; the first batch
        alone where the engine makes its runner at the first input (its
        concurrency is known once the runner exists)."""
        run_pipeline(produce, work, finish, workers=self.workers,
                     first_alone=self.predictor.runner_pending(),
                     ordered=ordered)

    # images

    def _readable(self, items: List[Item], report: InferenceReport
                  ) -> Iterator[Tuple[Item, np.ndarray]]:
        """The items with their images; the unreadable ones are skipped
        and listed in the report."""
        for item in items:
            try:
                yield item, read_image(item.path)
            except InputError as exc:
                report.skipped.append((item.path, str(exc)))
                print_log(f'skipped: {exc}', logger='current', level=30)

    def _segment_and_write(self, batch: List[Tuple[Item, np.ndarray]]
                           ) -> int:
        labels = self.predict([image for _, image in batch])
        for (item, image), label in zip(batch, labels):
            self.writer.write(item.name, image, label)
        return len(batch)

    def run_images(self, items: List[Item],
                   report: InferenceReport) -> None:
        mine = shard(items, self.rank, self.world_size)
        todo = [item for item in mine
                if self.options.force or not self.writer.done(item.name)]
        report.existing += len(mine) - len(todo)
        if report.existing:
            print_log(f'{report.existing} inputs already have their outputs '
                      f'in {self.options.out_dir}: skipped (--force redoes '
                      'them)', logger='current')
        if not todo:
            return
        remove_partials_of(path for item in todo
                           for path in self.writer.paths(item.name))
        progress = Progress(len(todo))

        def finished(batch, count: int) -> None:
            report.done += count
            progress.update(count)

        self._run_pipeline(
            lambda: batched(self._readable(todo, report),
                            self.options.batch_size),
            self._segment_and_write, finished, ordered=False)
        report.seconds += progress.close()

    # videos

    def video_path(self, video: str) -> str:
        return osp.join(self.options.out_dir, video_stem(video) + '.mp4')

    def _found_labels(self, video: str, index: int) -> Optional[np.ndarray]:
        """A frame's labels from the label map an earlier run wrote (none
        under ``force``)."""
        if self.options.force:
            return None
        return self.writer.read_labels(frame_name(video, index))

    def _draw_frames(self, video: str, batch: List[Frame]
                     ) -> List[np.ndarray]:
        """The overlays of a batch of frames; the frames without labels
        are segmented and their label maps written (when asked)."""
        todo = [frame for frame in batch if frame.labels is None]
        if todo:
            for frame, labels in zip(todo, self.predict(
                    [frame.image for frame in todo])):
                frame.labels = labels
                if self.options.save_pred:
                    self.writer.write_label_map(
                        frame_name(video, frame.index), labels)
        return [self.writer.overlay(frame.image, frame.labels)
                for frame in batch]

    def run_video(self, video: str, report: InferenceReport) -> None:
        """The video with the overlay drawn on each frame (same size and
        fps; ``--output-fourcc``), and per-frame label maps
        (``pred/<video>/<frame>.png``) when asked. The video is written to
        a temporary file and renamed when complete; the frames whose label
        maps exist (a killed run's) are not segmented again."""
        out = self.video_path(video)
        if self.rank != 0:
            return  # one video is one rank's job
        if osp.isfile(out) and not self.options.force:
            report.existing += 1
            print_log(f'{out} exists: skipped (--force redoes it)',
                      logger='current')
            return
        remove_partials_of([out])
        remove_partials(osp.dirname(self.writer.pred_path(
            frame_name(video, 0))))  # the folder is this video's
        with VideoInput(video) as source:
            if source.opened:
                self._segment_video(video, source, out, report)
                return
        report.skipped.append((video, 'cannot be opened as a video'))
        print_log(f'skipped: {video} cannot be opened as a video',
                  logger='current', level=30)

    def _segment_video(self, video: str, source: VideoInput, out: str,
                       report: InferenceReport) -> None:
        fps = self.options.output_fps or source.fps or 25
        progress = Progress(source.frame_count)
        output = VideoOutput(out, self.options.output_fourcc, fps)

        def finished(batch: List[Frame], drawn: List[np.ndarray]) -> None:
            found = sum(frame.found for frame in batch)
            report.existing += found
            report.done += len(batch) - found
            for image in drawn:
                output.write(image)
            progress.update(len(batch))

        with output:
            self._run_pipeline(
                lambda: batched(source.frames(partial(
                    self._found_labels, video)), self.options.batch_size),
                partial(self._draw_frames, video), finished, ordered=True)
            if not output.frames:
                report.skipped.append((video, 'has no frames'))
                return
            output.publish()
        report.seconds += progress.close()
        resumed = (f'; {report.existing} from the label maps of an earlier '
                   'run' if report.existing else '')
        print_log(f'wrote {out} ({output.frames} frames at {fps:g} fps'
                  f'{resumed})', logger='current')

    def run(self, source: str,
            items: Optional[List[Item]] = None) -> InferenceReport:
        """Segment ``source`` (its ``items`` where resolved already)."""
        report = InferenceReport(rank=self.rank, world_size=self.world_size,
                                 device=self.device)
        threads = torch.get_num_threads()
        if self.predictor.runtime_has_own_threads:
            torch.set_num_threads(1)
        try:
            if is_video(source):
                if not osp.isfile(source):
                    raise FileNotFoundError(f'input not found: {source}')
                self.run_video(source, report)
            else:
                self.run_images(items if items is not None
                                else resolve_inputs(source), report)
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
    # a wrong output folder, inputs that cannot be used (none, outputs that
    # would collide) fail before the model is built
    check_out_dir(options.out_dir)
    items = None if is_video(source) else resolve_inputs(source)
    job = InferenceJob(config, weights, options)
    report = job.run(source, items)
    shard_note = (f' (rank {report.rank} of {report.world_size})'
                  if report.world_size > 1 else '')
    print_log(f'segmented {report.done} images in {report.seconds:.1f} s '
              f'({report.images_per_s:.2f} images/s){shard_note}; outputs '
              f'in {options.out_dir}', logger='current')
    return report
