"""Check that the data sets of a config load correctly in mmseg: images and
labels paired, sizes equal, label values valid, image formats that mmseg's
loaders convert correctly, images at least as large as the crop.

    python tools/check_dataset.py CONFIG [--splits train val] [--quick]
        [--nproc N] [--data-root DIR] [--cfg-options k=v ...]

Exit status 2 with ``error: <message>`` when a data set has problems.
"""
import argparse
import inspect
import sys

from mmengine.config import Config, DictAction

from repvgg_seg.datasets import DatasetError, check_segmentation_dataset
from repvgg_seg.runner import run_cli


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='config file')
    parser.add_argument('--splits', nargs='+', default=['train', 'val'],
                        help='dataloaders to check: {split}_dataloader '
                        '(default: train val)')
    parser.add_argument('--quick', action='store_true',
                        help='pairing and file headers only (no decoding)')
    parser.add_argument('--nproc', type=int, default=1,
                        help='processes that decode files (default: 1)')
    parser.add_argument('--data-root', help='override the datasets\' '
                        'data_root')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries')
    return parser.parse_args(argv)


def leaf_datasets(dataset_cfg):
    """The dataset configs inside wrappers (RepeatDataset, ConcatDataset)."""
    if 'datasets' in dataset_cfg:
        for child in dataset_cfg['datasets']:
            yield from leaf_datasets(child)
    elif 'dataset' in dataset_cfg:
        yield from leaf_datasets(dataset_cfg['dataset'])
    else:
        yield dataset_cfg


def dataset_defaults(dataset_class) -> dict:
    """The __init__ defaults of a dataset class and its bases."""
    defaults = {}
    for cls in reversed(dataset_class.__mro__):
        if '__init__' in vars(cls):
            for name, param in inspect.signature(
                    cls.__init__).parameters.items():
                if param.default is not inspect.Parameter.empty:
                    defaults[name] = param.default
    return defaults


def crop_size_of(pipeline):
    for transform in pipeline or []:
        if transform.get('type') == 'RandomCrop':
            return transform['crop_size']
    return None


def check_options(dataset_cfg, data_root=None) -> dict:
    """The class names and check_segmentation_dataset's arguments of a
    dataset config."""
    from mmseg.registry import DATASETS  # imports mmseg.datasets on use
    dataset_type = dataset_cfg['type']
    dataset_class = dataset_type if inspect.isclass(dataset_type) \
        else DATASETS.get(dataset_type)
    if dataset_class is None:
        raise DatasetError(f'unknown dataset type {dataset_type!r}')
    settings = dict(dataset_defaults(dataset_class))
    settings.update(dataset_cfg)
    metainfo = settings.get('metainfo') or {}
    classes = metainfo.get('classes') or dataset_class.METAINFO['classes']
    prefix = settings.get('data_prefix') or {}
    return classes, dict(
        data_root=data_root or settings.get('data_root'),
        img_dir=prefix.get('img_path', ''),
        ann_dir=prefix.get('seg_map_path', ''),
        img_suffix=settings['img_suffix'],
        seg_map_suffix=settings['seg_map_suffix'],
        num_classes=len(classes),
        ignore_index=settings.get('ignore_index', 255),
        reduce_zero_label=settings.get('reduce_zero_label', False),
        crop_size=crop_size_of(settings.get('pipeline')))


def main(argv=None):
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    failed = []
    for split in args.splits:
        loader = cfg.get(f'{split}_dataloader')
        if loader is None:
            raise DatasetError(f'{args.config} has no {split}_dataloader')
        for dataset_cfg in leaf_datasets(loader['dataset']):
            classes, options = check_options(dataset_cfg, args.data_root)
            print(f'== {split}: {options["data_root"] or ""} '
                  f'{options["img_dir"]} / {options["ann_dir"]}')
            try:
                report = check_segmentation_dataset(
                    **options, quick=args.quick, nproc=args.nproc)
            except DatasetError as exc:
                print(f'error: {exc}', file=sys.stderr)
                failed.append(split)
                continue
            print(report.format(classes))
    if failed:
        return 2
    print('ok: ' + ', '.join(args.splits))
    return 0


if __name__ == '__main__':
    sys.exit(run_cli(main))
