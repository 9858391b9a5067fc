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
    assert 'repvgg_seg.models.reparam' in graph['repvgg_seg.models.repvgg']
    assert 'repvgg_seg.io.files' in graph['repvgg_seg.deploy.winograd']
    assert 'repvgg_seg.models' in graph['repvgg_seg.deploy.build']
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
    assert _resolve('repvgg_seg.deploy.build', False, 2,
                    'models') == 'repvgg_seg.models'


def test_layout_folders_hold_one_job_each():
    graph = import_graph()
    layers = ['errors', 'io', 'models', 'training', 'deploy', 'bench']
    rank = {name: i for i, name in enumerate(layers)}

    def layer(module):
        parts = module.split('.')
        return parts[1] if len(parts) > 1 and parts[1] in rank else None

    # lower layers never import higher ones (training and deploy are peers
    # except for the one helper deploy's hooks share: bare_model)
    for module, edges in graph.items():
        for target in edges:
            a, b = layer(module), layer(target)
            if a is None or b is None or a == b:
                continue
            if (a, b) == ('deploy', 'training'):
                assert target == 'repvgg_seg.training.state', module
                continue
            assert rank[a] > rank[b], f'{module} imports {target}'


@pytest.mark.parametrize('name', [
    'reparameterize', 'fuse_for_deploy', 'deploy_copy', 'RepVGG',
    'RepVGGBlock', 'ARCH_SETTINGS', 'load_checkpoint_file',
    'trusted_checkpoints', 'RepVGGSegError'
])
def test_public_entry_points(name):
    import repvgg_seg
    assert hasattr(repvgg_seg, name)


def test_registered_type_names():
    from mmengine.registry import HOOKS, LOOPS

    from mmseg.registry import MODELS
    assert MODELS.get('RepVGG') is not None
    for hook in ('RandomStateHook', 'SignalCheckpointHook', 'FiniteLossHook',
                 'CheckpointFitHook', 'FuseModelHook', 'DeployFuseHook',
                 'WinogradEngineHook'):
        assert HOOKS.get(hook) is not None, hook
    assert LOOPS.get('ResumableEpochBasedTrainLoop') is not None
