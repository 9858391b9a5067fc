"""Reading config files: the one place that turns a path (and
``--cfg-options``) into an mmengine Config, with a clear error for a missing
or broken file."""
import copy
import os
import os.path as osp
from typing import Optional, Union

from mmengine.config import Config

from .errors import ConfigError


def load_config(path: str, cfg_options: Optional[dict] = None) -> Config:
    """Read a config file and apply ``--cfg-options`` overrides."""
    if not osp.isfile(path):
        raise ConfigError(f'config file not found: {path}')
    try:
        cfg = Config.fromfile(path)
    except Exception as exc:  # mmengine raises anything from a bad file
        raise ConfigError(f'cannot read config {path}: {exc}') from None
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def as_config(config: Union[str, os.PathLike, Config, dict],
              cfg_options: Optional[dict] = None) -> Config:
    """A config given as a path, a Config or a dict, as a fresh Config
    (never the caller's object) with the overrides applied."""
    if isinstance(config, (str, os.PathLike)):
        return load_config(os.fspath(config), cfg_options)
    cfg = copy.deepcopy(config if isinstance(config, Config)
                        else Config(config))
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def unwrap_dataset(dataset: dict) -> dict:
    """The data set config inside its wrappers (``RepeatDataset``,
    ``ClassBalancedDataset`` ...: a ``dataset`` and no ``pipeline`` of
    their own); the config itself, not a copy, so a change to it is a
    change to the whole."""
    while 'pipeline' not in dataset and 'dataset' in dataset:
        dataset = dataset['dataset']
    return dataset


def default_work_dir(config_path: str) -> str:
    """``work_dirs/<config name>``, mmseg's convention."""
    return osp.join('work_dirs', osp.splitext(osp.basename(config_path))[0])


def check_work_dir(work_dir: str) -> None:
    """Fail early, before any training, when outputs cannot be written."""
    try:
        os.makedirs(work_dir, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f'cannot create work dir {work_dir}: {exc.strerror}') from None
    if not os.access(work_dir, os.W_OK):
        raise ConfigError(f'work dir {work_dir} is not writable')
