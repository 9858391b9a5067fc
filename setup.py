from setuptools import find_packages, setup


def read_requirements(path):
    with open(path) as f:
        return [line.strip() for line in f
                if line.strip() and not line.startswith('#')]


setup(
    name='repvgg_seg',
    version='0.1.0',
    description='RepVGG backbones for semantic segmentation on '
                'mmsegmentation 1.x, with exact structural re-parameterization',
    long_description=open('README.md').read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['repvgg_seg', 'repvgg_seg.*']),
    python_requires='>=3.10',
    # mmcv with compiled ops is required too; PyPI has only its source and it
    # must be built against the installed torch: see requirements/build_mmcv.sh.
    install_requires=read_requirements('requirements/runtime.txt'),
    extras_require={
        'cls': ['mmpretrain==1.2.0'],
        # ONNX export and its check, the onnxruntime and OpenVINO engines
        'deploy': ['onnx', 'onnxruntime', 'openvino'],
        'tests': read_requirements('requirements/tests.txt'),
    },
    license='Apache-2.0',
)
