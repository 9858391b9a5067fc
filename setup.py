from setuptools import find_packages, setup


def read_requirements(path):
    with open(path) as f:
        return [line.strip() for line in f
                if line.strip() and not line.startswith('#')]


setup(
    name='repvgg_seg',
    version='0.2.0',
    description='RepVGG backbones for semantic segmentation on '
                'mmsegmentation 1.x, with exact structural re-parameterization',
    long_description=open('README.md').read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['repvgg_seg', 'repvgg_seg.*']),
    package_data={'repvgg_seg.serving': ['static/*.html']},
    python_requires='>=3.10',
    # Version ranges (requirements/runtime.txt); the exact tested versions
    # are locked in requirements/constraints.txt, which `make env` applies.
    # mmcv needs its compiled ops: PyPI has only its source, built against
    # the installed torch by requirements/build_mmcv.sh.
    install_requires=read_requirements('requirements/runtime.txt'),
    extras_require={
        'cls': ['mmpretrain>=1.2,<1.3'],
        # ONNX export and its check, the onnxruntime and OpenVINO engines,
        # INT8 post-training quantization (NNCF)
        'deploy': ['onnx', 'onnxruntime', 'openvino>=2025.0', 'nncf>=3.0'],
        # the HTTP service (repvgg_seg.serving, tools/serve.py): Ray Serve
        # with its FastAPI ingress, multipart uploads, the load generator's
        # client (aiohttp), Serve config files (PyYAML), options from
        # strings (pydantic 2)
        'serve': ['ray[serve]>=2.50,<3', 'fastapi', 'uvicorn',
                  'python-multipart', 'aiohttp', 'pyyaml', 'pydantic>=2,<3'],
        'tests': read_requirements('requirements/tests.txt'),
    },
    license='Apache-2.0',
)
