"""``RepVGGSegInferencer``: mmseg's ``MMSegInferencer`` on every engine.

    from repvgg_seg.inference import RepVGGSegInferencer
    inferencer = RepVGGSegInferencer(model='configs/x.py',
                                     weights='work_dirs/x/model.xml',
                                     engine='openvino')
    result = inferencer('street.png', out_dir='out', opacity=0.5)
    result['predictions']          # HxW label map (train ids)

It is ``MMSegInferencer`` -- same ``__call__``, inputs (a path, a folder, a
list, numpy arrays), pipeline, batching, visualisation and results
(``SegDataSample``\\ s with ``return_datasamples=True``) -- with one
change: the model is built by :func:`repvgg_seg.engines.load_engine`, so
the weights can be a training or deploy checkpoint (loaded strictly, never
partly), an ``.onnx`` file or an OpenVINO IR (fp32 or INT8), and
``encode_decode`` runs on the engine asked for.
"""
import os.path as osp
import warnings
from typing import List, Optional, Union

from mmengine.registry import init_default_scope

from ..config import unwrap_dataset
from ..deploy.convert import read_checkpoint_meta
from ..engines import RunOptions, get_engine, load_engine, weights_kind


def _mmseg_inferencer():
    from mmseg.apis import MMSegInferencer
    return MMSegInferencer


def dataset_meta(cfg, weights: Optional[str]) -> dict:
    """Class names and palette: from the checkpoint's meta when it has them
    (as ``MMSegInferencer`` reads them), else from the config's test data
    set inside its wrappers (its ``metainfo``, else its class's
    ``METAINFO``), else Cityscapes'."""
    if weights and weights_kind(weights) == 'checkpoint' and \
            osp.isfile(weights):
        meta = read_checkpoint_meta(weights).get('dataset_meta') or {}
        if meta.get('classes'):
            return dict(classes=meta['classes'], palette=meta.get('palette'))
    from mmseg.registry import DATASETS
    from mmseg.utils import get_classes, get_palette
    dataset = unwrap_dataset(
        (cfg.get('test_dataloader') or {}).get('dataset') or {})
    cls = DATASETS.get(dataset.get('type', '')) if dataset.get('type') \
        else None
    # a config's own metainfo overrides the class's, as mmseg's data sets do
    info = dataset.get('metainfo') or getattr(cls, 'METAINFO', None) or {}
    if info.get('classes'):
        return dict(classes=list(info['classes']),
                    palette=[list(p) for p in info.get('palette') or []]
                    or None)
    return dict(classes=get_classes('cityscapes'),
                palette=get_palette('cityscapes'))


class RepVGGSegInferencer(_mmseg_inferencer()):
    """``MMSegInferencer`` whose model runs on an engine (see the module
    docstring).

    Args:
        model (str): the config file.
        weights (str, optional): a checkpoint (``.pth``/``.safetensors``),
            an ``.onnx`` file or an OpenVINO IR (``.xml``). Defaults to
            None (random weights, with mmseg's warning).
        engine (str): ``torch``, ``fused``, ``winograd``, ``onnxruntime``
            or ``openvino``. Defaults to ``'torch'``.
        precision (str): the engine's precision. Defaults to ``'fp32'``.
        streams (int, optional): OpenVINO requests in flight (a batch's
            windows run in parallel). Defaults to None (one).
        threads (int, optional): CPU threads of the runtime. Defaults to
            None (its default).
        graph_labels (bool): OpenVINO also computes the argmax labels in
            its graph (``RunOptions.labels``; read by inference jobs).
            Defaults to False.
        device (str, optional): where the engine runs. Defaults to None (a
            GPU when one is visible and the engine runs there, else the
            CPU).
        classes, palette, dataset_name, scope: as for ``MMSegInferencer``.
    """

    def __init__(self, model: str, weights: Optional[str] = None,
                 engine: str = 'torch', precision: str = 'fp32',
                 streams: Optional[int] = None,
                 threads: Optional[int] = None,
                 graph_labels: bool = False,
                 classes: Optional[Union[str, List]] = None,
                 palette: Optional[Union[str, List]] = None,
                 dataset_name: Optional[str] = None,
                 device: Optional[str] = None,
                 scope: Optional[str] = 'mmseg',
                 cfg_options: Optional[dict] = None) -> None:
        self.engine = engine
        self.cfg_options = cfg_options
        if device is None:
            device = get_engine(engine).default_device()
        self.run_options = RunOptions(precision=precision, device=device,
                                      streams=streams, threads=threads,
                                      labels=graph_labels)
        init_default_scope(scope or 'mmseg')
        if cfg_options:
            from ..config import as_config
            model = as_config(model, cfg_options)
        super().__init__(model=model, weights=weights, classes=classes,
                         palette=palette, dataset_name=dataset_name,
                         device=device, scope=scope)

    def _init_model(self, cfg, weights: Optional[str], device: str = 'cpu'):
        if weights is None:
            warnings.warn('Checkpoint is not loaded, and the inference '
                          'result is calculated by the randomly initialized '
                          'model!')
        model = load_engine(cfg, weights, self.engine, self.run_options)
        model.cfg = cfg
        model.dataset_meta = dataset_meta(cfg, weights)
        if device.split(':')[0] in get_engine(self.engine).devices:
            # the data preprocessor's output follows: the engine's inputs
            # are on its device (onnxruntime binds CUDA tensors in place)
            model.to(device)
        return model.eval()
