"""The package's architecture: no import cycles between its modules (counting
imports inside functions too), and the public entry points in place."""
import ast
import os
import os.path as osp

import pytest

from .conftest import REPO

PACKAGE = 'repvgg_seg'
ROOT = osp.join(REPO, PACKAGE)


def _module_name(path):
    rel = osp.relpath(path, REPO)[:-len('.py')].replace(os.sep, '.')
    return rel[:-len('.__init__')] if rel.endswith('.__init__') else rel


def _modules():
    found = {}
    for folder, _, files in os.walk(ROOT):
        for name in files:
            if name.endswith('.py'):
                path = osp.join(folder, name)
                found[_module_name(path)] = path
    return found


def _resolve(module, is_package, level, target):
    """The absolute name of ``from <level dots><target> import ...``."""
    if level == 0:
        return target
    parts = module.split('.')
    base = parts if is_package else parts[:-1]
    base = base[:len(base) - (level - 1)]
    return '.'.join(base + ([target] if target else []))


def import_graph():
    """``{module: {project modules it imports}}``, every import statement
    of the file (module level, in functions, in classes)."""
    modules = _modules()
    graph = {}
    for module, path in modules.items():
        is_package = path.endswith('__init__.py')
        with open(path) as f:
            tree = ast.parse(f.read(), path)
        edges = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(module, is_package, node.level,
                                node.module or '')
                # `from pkg import sub` imports the submodule pkg.sub
                names = [f'{base}.{alias.name}'
                         if f'{base}.{alias.name}' in modules else base
                         for alias in node.names]
            else:
                continue
            for name in names:
                while name and name not in modules:
                    name = name.rpartition('.')[0]
                if name and name != module:
                    edges.add(name)
        graph[module] = edges
    return graph


def find_cycle(graph):
    """One import cycle as a list of modules, or None."""
    state = {}

    def visit(node, stack):
        state[node] = 'open'
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 'open':
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt, stack)
                if found:
                    return found
        state[node] = 'done'
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node, [])
            if found:
                return found
    return None


def test_no_import_cycles():
    graph = import_graph()
    assert len(graph) > 30  # the walk found the package
    # known edges, so that a broken resolver cannot pass by seeing nothing
    assert 'repvgg_seg.models.reparam' in graph['repvgg_seg.models.blocks']
    assert 'repvgg_seg.io.files' in graph['repvgg_seg.engines.winograd.tuning']
    assert 'repvgg_seg.evaluation.windows' in graph[
        'repvgg_seg.quantization.quantize']
    assert 'repvgg_seg.engines' in graph['repvgg_seg.bench.timing']
    assert 'repvgg_seg.models' in graph['repvgg_seg.apis.build']
    cycle = find_cycle(graph)
    assert cycle is None, 'import cycle: ' + ' -> '.join(cycle)


def test_cycle_finder_sees_function_level_imports(tmp_path):
    graph = {'a': {'b'}, 'b': {'c'}, 'c': {'a'}}
    assert find_cycle(graph) == ['a', 'b', 'c', 'a']
    assert find_cycle({'a': {'b'}, 'b': set()}) is None
    # a function-level import is an edge like any other
    source = 'def f():\n    from .models import repvgg\n'
    node = next(n for n in ast.walk(ast.parse(source))
                if isinstance(n, ast.ImportFrom))
    assert _resolve('repvgg_seg.deploy', True, node.level,
                    node.module) == 'repvgg_seg.deploy.models'
    assert _resolve('repvgg_seg.apis.build', False, 2,
                    'models') == 'repvgg_seg.models'


def test_layout_folders_hold_one_job_each():
    graph = import_graph()
    layers = ['errors', 'io', 'models', 'training', 'apis', 'backends',
              'evaluation', 'deploy', 'quantization', 'engines', 'inference',
              'bench']
    rank = {name: i for i, name in enumerate(layers)}

    def layer(module):
        parts = module.split('.')
        return parts[1] if len(parts) > 1 and parts[1] in rank else None

    # lower layers never import higher ones (training and deploy are peers
    # except for the one helper deploy's hooks share: bare_model; so are
    # inference and bench)
    for module, edges in graph.items():
        for target in edges:
            a, b = layer(module), layer(target)
            if a is None or b is None or a == b:
                continue
            if (a, b) in (('deploy', 'training'), ('engines', 'training')):
                assert target == 'repvgg_seg.training.state', module
                continue
            assert {a, b} != {'inference', 'bench'}, (module, target)
            assert rank[a] > rank[b], f'{module} imports {target}'


def test_public_entry_points(tmp_path):
    """Each name of the package's front door, called on a tiny model."""
    import numpy as np
    import torch
    import torch.nn as nn
    from mmcv.cnn import ConvModule

    import repvgg_seg
    from repvgg_seg import (ARCH_SETTINGS, ConfigError, RepVGG, RepVGGBlock,
                            RepVGGSegError, UnsafeCheckpointError, deploy_copy,
                            fuse_for_deploy, load_checkpoint_file,
                            reparameterize, trusted_checkpoints)
    from tests.helpers import randomize_bn, relative_error
    assert {'reparameterize', 'fuse_for_deploy', 'deploy_copy', 'RepVGG',
            'RepVGGBlock', 'ARCH_SETTINGS', 'load_checkpoint_file',
            'trusted_checkpoints', 'RepVGGSegError'} <= set(repvgg_seg.__all__)

    # ARCH_SETTINGS: the paper's Table 3, and what RepVGG builds from it
    assert ARCH_SETTINGS['A0']['num_blocks'] == (2, 4, 14, 1)
    assert ARCH_SETTINGS['A0']['width_factor'] == (0.75, 0.75, 0.75, 2.5)
    assert ARCH_SETTINGS['B1g2']['group_layer_map'] == {
        layer: 2 for layer in range(2, 27, 2)}
    with torch.device('meta'):
        assert RepVGG('A0').out_channels == [48, 48, 96, 192, 1280]

    # RepVGG and RepVGGBlock: shapes, and the block's three branches
    torch.manual_seed(0)
    tiny = dict(num_blocks=(1, 2, 1, 1), width_factor=(0.25, 0.25, 0.25,
                                                       0.25))
    model = RepVGG(tiny, out_indices=(2, 4)).eval()
    randomize_bn(model)
    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        ref = model(x)
    assert [tuple(o.shape) for o in ref] == [(1, 32, 4, 6), (1, 128, 1, 2)]
    block = RepVGGBlock(8, 8).eval()
    randomize_bn(block, seed=1)
    y = torch.randn(1, 8, 5, 7)
    with torch.no_grad():
        by_hand = torch.relu(block.rbr_dense(y) + block.rbr_1x1(y)
                             + block.rbr_identity(y))
        assert torch.equal(block(y), by_hand)

    # deploy_copy: a fused copy, the original untouched
    copied = deploy_copy(model)
    assert copied is not model
    assert not any(isinstance(m, nn.BatchNorm2d) for m in copied.modules())
    assert not model.deploy and hasattr(model.stage2[1], 'rbr_dense')
    # reparameterize: in place, every block, the same function
    report = reparameterize(model, verify=True, input_shape=(1, 3, 32, 48))
    assert report['converted'] == 1 + 1 + 2 + 1 + 1
    assert report['max_rel_diff'] < 1e-5
    assert all(hasattr(b, 'rbr_reparam') and not hasattr(b, 'rbr_dense')
               for _, b in model.blocks())
    with torch.no_grad():
        assert relative_error(ref, model(x)) < 1e-5
        assert relative_error(ref, copied(x)) < 1e-5

    # fuse_for_deploy: the blocks and a head's conv+BN (mmcv ConvModule)
    net = nn.Sequential(RepVGGBlock(3, 8), ConvModule(
        8, 4, 3, padding=1, norm_cfg=dict(type='BN'))).eval()
    randomize_bn(net, seed=2)
    with torch.no_grad():
        before = net(x)
        assert fuse_for_deploy(net) is net
        assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
        assert relative_error(before, net(x)) < 1e-5

    # load_checkpoint_file: weights come back; a pickle that needs other
    # classes is refused unless trusted_checkpoints() says otherwise
    path = tmp_path / 'tiny.pth'
    torch.save({'state_dict': model.state_dict()}, path)
    loaded = load_checkpoint_file(path)['state_dict']
    assert list(loaded) == list(model.state_dict())
    assert all(torch.equal(loaded[k], v)
               for k, v in model.state_dict().items())
    pickled = tmp_path / 'pickled.pth'
    torch.save({'extra': np.random.default_rng(0)}, pickled)
    with pytest.raises(UnsafeCheckpointError, match='refused to load .*'
                       'pickled.pth.*--trust-checkpoint'):
        load_checkpoint_file(pickled)
    with trusted_checkpoints():
        rng = load_checkpoint_file(pickled)['extra']
    assert rng.integers(1000) == np.random.default_rng(0).integers(1000)

    # RepVGGSegError: what every user error is (and what a caller catches)
    with pytest.raises(RepVGGSegError, match="unknown RepVGG arch 'A9'"):
        RepVGG('A9')
    assert issubclass(ConfigError, RepVGGSegError)
    assert issubclass(UnsafeCheckpointError, RepVGGSegError)


def test_registered_type_names():
    from mmengine.registry import HOOKS, LOOPS
    from mmseg.registry import MODELS
    assert MODELS.get('RepVGG') is not None
    for hook in ('RandomStateHook', 'SignalCheckpointHook', 'FiniteLossHook',
                 'CheckpointFitHook', 'EngineHook', 'DeployFuseHook'):
        assert HOOKS.get(hook) is not None, hook
    assert LOOPS.get('ResumableEpochBasedTrainLoop') is not None
    from mmengine.registry import RUNNERS
    assert RUNNERS.get('ResumableRunner') is not None
