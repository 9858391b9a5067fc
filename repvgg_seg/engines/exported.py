"""The engines that run the model exported to ONNX: onnxruntime and
OpenVINO's CPU plugin (fp32, bf16, fp16, and INT8: an IR quantized by
``tools/quantize.py``, or the model quantized on the fly by NNCF for the
benchmark).

A model from a checkpoint is exported through the checked export
(:func:`repvgg_seg.deploy.export.export_onnx_file`) at the shape of its
first input; an ``.onnx``/``.xml`` file runs as it is. The runners are the
backends' (:class:`~repvgg_seg.backends.onnxruntime.OnnxRuntimeRunner`,
:class:`~repvgg_seg.backends.openvino.OpenVINORunner`: a pool of infer
requests for throughput).

OpenVINO's model is compiled with its output converted to NHWC in the
graph (:meth:`OpenVINOEngine.nhwc_output`) and its runner hands the logits
over as NCHW with channels-last strides: mmseg's argmax and resize of the
logits then run on contiguous channels, several times faster (measured in
docs/benchmarks.md, "Inference: the OpenVINO runner").
"""
import os.path as osp
from typing import Optional

import numpy as np

from ..backends import onnxruntime as ort_backend
from ..backends import openvino as ov_backend
from ..backends import require
from ..deploy.export import export_onnx_file
from ..errors import InputError, UnavailableError
from .base import Engine, RunOptions

#: OpenVINO's inference precision for the layers an INT8 model leaves in
#: float: ``int8`` keeps them in f32 (the default on every CPU), and
#: ``int8-bf16`` runs them in bf16 (native on CPUs with AVX512-BF16/AMX)
INT8_PRECISIONS = {'int8': 'fp32', 'int8-bf16': 'bf16'}


class ExportedEngine(Engine):
    """An engine that runs the model exported to ONNX."""

    weight_kinds = ('checkpoint', 'onnx')
    batches = False

    def require(self):
        require(self.package, f'the {self.name} engine')

    def onnx_file(self, module, input_shape, folder) -> str:
        path = osp.join(folder, 'model.onnx')
        export_onnx_file(module, path, tuple(input_shape))
        return path

    def runner(self, module, input_shape, options, folder):
        return self.file_runner(self.onnx_file(module, input_shape, folder),
                                options)


class OnnxRuntimeEngine(ExportedEngine):
    """onnxruntime, on its CPU provider or, for ``--device cuda[:N]``, its
    CUDA provider on that device with inputs and outputs bound on it
    (:func:`repvgg_seg.backends.onnxruntime.onnxruntime_infer`). ``info``
    names the provider that runs the session (``provider``), so a fall-back
    to the CPU provider shows."""

    name = package = 'onnxruntime'
    devices = ('cpu', 'cuda')

    def default_device(self) -> str:
        """A visible GPU only where this onnxruntime has its CUDA provider
        (the ``onnxruntime`` package has none; ``onnxruntime-gpu`` has)."""
        if super().default_device() == 'cpu':
            return 'cpu'
        try:
            import onnxruntime as ort
        except ImportError:
            return 'cpu'
        return ('cuda' if 'CUDAExecutionProvider'
                in ort.get_available_providers() else 'cpu')

    def file_runner(self, path, options):
        self.require()
        import onnxruntime as ort
        if options.device.startswith('cuda') and \
                'CUDAExecutionProvider' not in ort.get_available_providers():
            raise UnavailableError(
                'this onnxruntime has no CUDA provider (available: '
                f'{", ".join(ort.get_available_providers())}); install '
                'onnxruntime-gpu, or use --device cpu')
        return ort_backend.onnxruntime_infer(path, options.threads,
                                            options.device)


class OpenVINOEngine(ExportedEngine):
    """OpenVINO's CPU plugin at an explicit inference precision, or an INT8
    model: an IR from ``tools/quantize.py``, or (from a checkpoint) the
    exported model quantized by NNCF on the calibration inputs of the run
    options (:func:`repvgg_seg.quantization.ptq.quantize_module`)."""

    name = package = 'openvino'
    precisions = ('fp32', 'bf16', 'fp16') + tuple(INT8_PRECISIONS)
    weight_kinds = ('checkpoint', 'onnx', 'ir')
    batches = True

    def weights_hint(self, kind):
        return ''

    def require_precision(self, precision):
        if precision in INT8_PRECISIONS:
            require('nncf', 'INT8 rows (--precision int8)')
        if 'bf16' in precision:
            require('openvino', 'the openvino engine')
            import openvino as ov
            caps = ov.Core().get_property('CPU', 'OPTIMIZATION_CAPABILITIES')
            if 'BF16' not in caps:
                raise UnavailableError(
                    f'--precision {precision} runs layers in bf16, which '
                    'this CPU has no native kernels for (OpenVINO: '
                    f'{", ".join(caps)}); use fp32 or int8')

    @staticmethod
    def hint(precision: str) -> str:
        """The compile precision of an ``int8``/``int8-bf16``/float run."""
        if precision in INT8_PRECISIONS:
            return 'int8' if INT8_PRECISIONS[precision] == 'fp32' \
                else 'bf16'
        return precision

    @staticmethod
    def nhwc_output(model):
        """``model`` (a path or an ``openvino.Model``) with its 4-D output
        converted to NHWC in the graph, and whether it was."""
        import openvino as ov
        if isinstance(model, str):
            model = ov_backend.openvino_read(model)
        else:
            model = model.clone()  # the caller's model keeps its output
        if len(model.outputs) != 1 or \
                model.output(0).get_partial_shape().rank.get_length() != 4:
            return model, False
        ppp = ov.preprocess.PrePostProcessor(model)
        ppp.output().model().set_layout(ov.Layout('NCHW'))
        ppp.output().tensor().set_layout(ov.Layout('NHWC'))
        return ppp.build(), True

    @staticmethod
    def labels_output(model):
        """``model`` (NHWC logits) given a second output: the argmax over
        the classes (TopK with k=1, int32 ``N x H x W x 1``)."""
        import openvino.opset13 as ops
        logits = model.get_results()[0].input_value(0)
        top = ops.topk(logits, ops.constant(np.int64(1)), axis=3,
                       mode='max', sort='none', index_element_type='i32')
        model.add_results([ops.result(top.output(1))])
        return model

    def compiled_runner(self, model, options: RunOptions,
                        info: Optional[dict] = None
                        ) -> ov_backend.OpenVINORunner:
        model, channels_last = self.nhwc_output(model)
        labels = options.labels and channels_last
        if labels:
            model = self.labels_output(model)
        compiled = ov_backend.openvino_compile(
            model, self.hint(options.precision), options.threads,
            streams=options.streams)
        info = dict(info or {})
        convs = ov_backend.openvino_conv_precisions(compiled)
        if convs['int8_convs'] or options.precision in INT8_PRECISIONS:
            # an INT8 model says how many of its convs run in INT8
            info.update(convs=convs['convs'], int8_convs=convs['int8_convs'],
                        conv_kernels=convs['kernels'])
        return ov_backend.OpenVINORunner(compiled, options.streams, info,
                                         channels_last, labels)

    def file_runner(self, path, options):
        if not osp.isfile(path):
            raise FileNotFoundError(f'model file not found: {path}')
        if path.endswith('.xml'):
            binary = ov_backend.openvino_paths(path)[1]
            if not osp.isfile(binary):
                raise FileNotFoundError(
                    f'the weights of the OpenVINO IR {path} are missing: '
                    f'{binary} not found')
        return self.compiled_runner(path, options, dict(weights=path))

    def runner(self, module, input_shape, options, folder):
        if options.precision not in INT8_PRECISIONS:
            return super().runner(module, input_shape, options, folder)
        from ..quantization.ptq import quantize_module
        calibration = options.calibration
        if calibration is None:
            raise InputError('INT8 from a checkpoint needs calibration '
                             'inputs (an INT8 IR from tools/quantize.py '
                             'needs none)')
        quantized = quantize_module(module, input_shape, calibration)
        return self.compiled_runner(quantized, options, dict(
            calibration_images=len(calibration.items),
            calibration_generated=calibration.is_generated))
