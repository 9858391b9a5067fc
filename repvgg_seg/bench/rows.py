"""The benchmark's rows: one per (config, fused, engine, precision,
layout), each with its model, its runner (an INT8 row's made by NNCF on
calibration images), its complexity and the images its agreement with
fp32 torch is measured on; an OpenVINO IR's row as the IR is."""
import os
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import torch.nn as nn
from mmengine.logging import print_log

from ..apis.build import LogitsModule, load_model
from ..backends.base import Runner
from ..config import as_config
from ..engines import ENGINES, RunOptions
from ..engines.exported import INT8_PRECISIONS
from ..errors import InputError, UnavailableError, check_choice
from ..evaluation.windows import ImageWindows
from ..models.convert import deploy_copy
from .complexity import model_complexity
from .options import FUSE_CHOICES, BenchmarkOptions


@dataclass
class Row:
    """One benchmarked variant."""
    config: str
    fused: bool
    model: nn.Module                    # fp32 torch LogitsModule (reference)
    engine: str = 'torch'
    precision: str = 'fp32'
    layout: str = 'nchw'
    run: Optional[Runner] = None
    gmacs: float = 0.0
    params: int = 0
    latencies: List[float] = field(default_factory=list)
    peak_mem_mb: float = 0.0
    peak_mem_delta_mb: float = 0.0
    agreement: Optional[dict] = None
    info: dict = field(default_factory=dict)  # the engine's (INT8 convs)
    ir: Optional[str] = None  # an IR file timed as it is
    images: Optional[ImageWindows] = None  # the agreement images

    @property
    def name(self) -> str:
        return os.path.splitext(os.path.basename(self.config))[0]

    @property
    def label(self) -> str:
        return (f'{self.name}{"[fused]" if self.fused else ""}'
                f'{"[ir]" if self.ir else ""}'
                f'[{self.engine}/{self.precision}/{self.layout}]')

    @property
    def is_reference(self) -> bool:
        """fp32 eager torch: the rows are checked against this."""
        return (self.engine == 'torch' and self.precision == 'fp32'
                and self.layout == 'nchw')


def build_models(configs: Sequence[str], fuse: str = 'both',
                 checkpoints: Optional[Sequence[Optional[str]]] = None,
                 cfg_options: Optional[dict] = None) -> list:
    """``[(config, fused, fp32 LogitsModule)]`` for every (config, fused)
    variant."""
    check_choice('fuse', fuse, FUSE_CHOICES)
    checkpoints = list(checkpoints or [None] * len(configs))
    if len(checkpoints) != len(configs):
        raise InputError(f'{len(checkpoints)} checkpoints for '
                         f'{len(configs)} configs; give one per config')
    models = []
    for config, ckpt in zip(configs, checkpoints):
        model = load_model(config, ckpt, cfg_options=cfg_options)
        for fused in {'no': [False], 'yes': [True],
                      'both': [False, True]}[fuse]:
            m = deploy_copy(model) if fused else model
            models.append((config, fused, LogitsModule(m).eval()))
        print_log(f'built {config}' + (f' with {ckpt}' if ckpt else
                                       ' (random weights)'),
                  logger='current')
    return models


def runnable_combinations(options: BenchmarkOptions):
    """The (engine, precision, layout) combinations that can run, and a
    note for each one skipped."""
    combos, notes = [], []
    for engine in options.engines:
        for precision in options.precisions:
            for layout in options.layouts:
                why = ENGINES[engine].unsupported(precision, layout,
                                                  options.device,
                                                  options.compile)
                if why:
                    notes.append(f'skipped {engine}/{precision}/{layout}: '
                                 f'{why}')
                else:
                    combos.append((engine, precision, layout))
    if not combos:
        raise UnavailableError('; '.join(n.split(': ', 1)[1]
                                         for n in notes))
    return combos, notes



def _agreement_images(model: nn.Module, config: str, options,
                      cfg_options, count: Optional[int] = None
                      ) -> ImageWindows:
    """The images rows are checked (or INT8 rows calibrated) on: the
    first ``count`` of ``options.images`` through the config's test
    pipeline, or generated ones."""
    input_shape = tuple(options.shape)
    if options.images:
        images = options.images[:count] if count else options.images
        return ImageWindows.from_files(
            model, as_config(config, cfg_options), images, input_shape,
            options.batch_size)
    seeds = ([options.seed + 1000 + i for i in range(count)] if count
             else [options.seed])
    return ImageWindows.generated(model, seeds, input_shape,
                                  options.batch_size)


def _run_options(options: BenchmarkOptions, precision: str, layout: str,
                 calibration=None) -> RunOptions:
    return RunOptions(precision=precision, layout=layout,
                      device=options.device, threads=options.threads,
                      compile=options.compile, streams=options.streams,
                      calibration=calibration)


def _log_int8(row: 'Row') -> None:
    if 'int8_convs' in row.info:
        print_log(f'{row.label}: {row.info["int8_convs"]}/'
                  f'{row.info["convs"]} convs run in INT8 '
                  f'({row.info["conv_kernels"]})', logger='current',
                  level=30 if row.info['int8_convs'] < row.info['convs']
                  else 20)


def _ir_row(config: str, model: nn.Module, ir: str,
            options: BenchmarkOptions) -> 'Row':
    """A row that times the OpenVINO IR ``ir`` as it is (e.g. the one
    ``tools/quantize.py`` wrote and tested), checked against ``model``."""
    from ..backends.openvino import is_quantized
    precision = 'int8' if is_quantized(ir) else 'fp32'
    row = Row(config=config, fused=True, model=model, engine='openvino',
              precision=precision, ir=ir)
    row.run = ENGINES['openvino'].file_runner(
        ir, _run_options(options, precision, 'nchw'))
    expected = list(row.run.input_shape[2:])
    if expected != list(options.shape):
        raise InputError(f'{ir} takes {expected[0]}x{expected[1]} inputs: '
                         f'benchmark it with --shape {expected[0]} '
                         f'{expected[1]}')
    # an INT8 runner says how many of its convs run in INT8
    row.info = dict(ir=ir, **{key: row.run.info[key] for key in (
        'convs', 'int8_convs', 'conv_kernels') if key in row.run.info})
    return row


def make_rows(configs, options, combos, checkpoints, cfg_options,
              folder, notes: List[str], irs=None) -> List[Row]:
    """Every row of ``combos`` for every (config, fused) model, and a row
    per IR of ``irs``; runners made in ``folder`` (scratch space)."""
    input_shape = (options.batch_size, 3) + tuple(options.shape)
    rows = []
    irs = list(irs or [])
    for config, fused, model in build_models(configs, options.fuse,
                                             checkpoints, cfg_options):
        cx = model_complexity(model, options.shape, batch_size=1)
        # LogitsModule.to moves the data preprocessor's device too: the
        # agreement images are made on the device
        model.to(options.device)
        images = _agreement_images(model.model, config, options, cfg_options)
        for engine, precision, layout in combos:
            row = Row(config=config, fused=fused, model=model,
                      engine=engine, precision=precision, layout=layout,
                      gmacs=cx['flops'] / 1e9, params=cx['params'],
                      images=images)
            scratch = os.path.join(folder, str(len(rows)))
            os.makedirs(scratch)
            calibration = None
            if precision in INT8_PRECISIONS:
                calibration = _agreement_images(model.model, config, options,
                                                cfg_options,
                                                options.calib_images)
                print_log(f'{row.label}: quantizing (NNCF) on '
                          f'{len(calibration.items)} '
                          f'{calibration.description} images',
                          logger='current')
            row.run = ENGINES[engine].runner(
                model, input_shape,
                _run_options(options, precision, layout, calibration),
                scratch)
            row.info = dict(row.run.info)
            _log_int8(row)
            _log_provider(row, options, notes)
            rows.append(row)
        index = configs.index(config)
        if index < len(irs) and irs[index] and (fused or options.fuse
                                                == 'no'):
            row = _ir_row(config, model, irs[index], options)
            row.gmacs, row.params, row.images = (cx['flops'] / 1e9,
                                                 cx['params'], images)
            _log_int8(row)
            rows.append(row)
    if any(r.precision in INT8_PRECISIONS and not r.ir for r in rows):
        notes.append(_int8_note(options))
    return rows


def _log_provider(row: 'Row', options: BenchmarkOptions,
                  notes: List[str]) -> None:
    """A note when an onnxruntime row on CUDA runs on another provider
    (onnxruntime falls back to its CPU provider when CUDA's fails to
    load)."""
    provider = row.info.get('provider')
    if (provider and options.device.startswith('cuda')
            and provider != 'CUDAExecutionProvider'):
        note = (f'{row.label} ran on onnxruntime\'s {provider}, not on '
                f'{options.device}: its CUDA provider did not load')
        print_log(note, logger='current', level=30)
        notes.append(note)


def _int8_note(options: BenchmarkOptions) -> str:
    if not options.images:
        return (f'INT8 rows were calibrated on {options.calib_images} '
                'generated images: their speed is real, their agreement '
                'says nothing about accuracy (calibrate on real images with '
                '--image, or use tools/quantize.py)')
    used = min(len(options.images), options.calib_images)
    return (f'INT8 rows were calibrated on the first {used} of the '
            f'--image images, which the agreement is measured on too (for '
            'a held-out measure use tools/quantize.py)')
