"""The package's architecture: no import cycles between its modules (counting
imports inside functions too), layers that import only downwards, packages
that say what they hold, modules and functions of a readable size, and the
public entry points in place."""
import ast
import os
import os.path as osp

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
    layers = ['errors', 'io', 'datasets', 'models', 'training', 'apis',
              'backends', 'evaluation', 'deploy', 'quantization', 'engines',
              'inference', 'bench', 'serving']
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


def test_tool_plumbing_is_on_top():
    """The tools' plumbing (Runner runs, command lines, the demo) uses the
    package; no package module imports it back."""
    plumbing = {f'{PACKAGE}.runs', f'{PACKAGE}.cli', f'{PACKAGE}.demo'}
    graph = import_graph()
    assert f'{PACKAGE}.runs' in graph[f'{PACKAGE}.cli']
    back = sorted(f'{module} imports {target}'
                  for module, edges in graph.items() if module not in plumbing
                  for target in edges & plumbing)
    assert back == []


def _assert_front_door(module, expected):
    """``module.__all__`` is the names of ``expected``, each the object
    given there."""
    assert sorted(module.__all__) == sorted(expected)
    for name, obj in expected.items():
        assert getattr(module, name) is obj, f'{module.__name__}.{name}'


def test_public_entry_points():
    """The package's front door (README, configs, docs): every name of
    ``repvgg_seg.__all__`` and ``repvgg_seg.models.__all__`` is there and
    is the object of the module that defines it."""
    import repvgg_seg
    from repvgg_seg import errors, models
    from repvgg_seg.io import checkpoint
    from repvgg_seg.models import archs, blocks, convert, dilation, fused
    from repvgg_seg.models import repvgg as backbone
    front = {
        'ARCH_SETTINGS': archs.ARCH_SETTINGS, 'RepVGG': backbone.RepVGG,
        'RepVGGBlock': blocks.RepVGGBlock,
        'QARepVGGBlock': blocks.QARepVGGBlock,
        'reparameterize': convert.reparameterize,
        'fuse_for_deploy': convert.fuse_for_deploy,
        'deploy_copy': convert.deploy_copy,
        'load_checkpoint_file': checkpoint.load_checkpoint_file,
        'trusted_checkpoints': checkpoint.trusted_checkpoints,
        'RepVGGSegError': errors.RepVGGSegError,
        'ConfigError': errors.ConfigError,
        'CheckpointError': errors.CheckpointError,
        'UnsafeCheckpointError': errors.UnsafeCheckpointError,
        'NonFiniteLossError': errors.NonFiniteLossError,
        'use_mmengine_defaults': repvgg_seg.use_mmengine_defaults}
    _assert_front_door(repvgg_seg, front)
    shared = ('ARCH_SETTINGS', 'RepVGG', 'RepVGGBlock', 'QARepVGGBlock',
              'reparameterize', 'fuse_for_deploy', 'deploy_copy')
    _assert_front_door(models, dict(
        {name: front[name] for name in shared},
        PAPER_ARCHS=archs.PAPER_ARCHS, BLOCK_TYPES=blocks.BLOCK_TYPES,
        DILATION_MODES=dilation.DILATION_MODES, FUSED_TYPE=fused.FUSED_TYPE,
        FusedModel=fused.FusedModel))
    # RepVGGSegError: what every user error is (and what a caller catches)
    for name in ('ConfigError', 'CheckpointError', 'UnsafeCheckpointError',
                 'NonFiniteLossError'):
        assert issubclass(front[name], errors.RepVGGSegError), name


def test_registered_type_names():
    """The type names configs use are registered, as the project's
    objects."""
    from mmengine.registry import HOOKS, LOOPS, RUNNERS
    from mmseg.registry import MODELS

    import repvgg_seg
    assert MODELS.get('RepVGG') is repvgg_seg.RepVGG
    assert HOOKS.get('FiniteLossHook') is repvgg_seg.training.FiniteLossHook
    for hook in ('RandomStateHook', 'SignalCheckpointHook', 'FiniteLossHook',
                 'CheckpointFitHook', 'EngineHook', 'DeployFuseHook'):
        assert HOOKS.get(hook) is not None, hook
    assert LOOPS.get('ResumableEpochBasedTrainLoop') is not None
    assert RUNNERS.get('ResumableRunner') is not None


def test_requirements_take_mmsegs_mmcv_range():
    """requirements/runtime.txt asks for the mmcv range mmseg itself
    accepts (mmseg refuses any other on import)."""
    from mmseg import MMCV_MAX, MMCV_MIN
    with open(osp.join(REPO, 'requirements', 'runtime.txt')) as f:
        assert f'mmcv (>={MMCV_MIN},<{MMCV_MAX})' in f.read()


# ------------------------------------------------------------------ sizes
# A module or function longer than these holds more than one job; two
# modules may stay over MODULE_LINES while they are being split.
MAX_MODULE_LINES = 600
MODULE_LINES = 450
LONG_MODULES_ALLOWED = 2
FUNCTION_LINES = 80


def _parsed(path):
    with open(path) as f:
        return ast.parse(f.read(), path)


def _functions(node, prefix=''):
    """``(qualified name, lines)`` of every function and method under
    ``node``, nested ones included."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                              ast.ClassDef)):
            name = prefix + child.name
            if not isinstance(child, ast.ClassDef):
                yield name, child.end_lineno - child.lineno + 1
            yield from _functions(child, name + '.')
        else:
            yield from _functions(child, prefix)


def test_every_package_says_what_it_holds():
    """Every package of repvgg_seg has a docstring."""
    missing = [name for name, path in sorted(_modules().items())
               if path.endswith('__init__.py')
               and not (ast.get_docstring(_parsed(path)) or '').strip()]
    assert missing == [], f'packages without a docstring: {missing}'


def test_modules_are_a_readable_size():
    """No module over MAX_MODULE_LINES lines, at most LONG_MODULES_ALLOWED
    over MODULE_LINES."""
    lines = {}
    for name, path in _modules().items():
        with open(path) as f:
            lines[name] = len(f.read().splitlines())
    too_long = {n: k for n, k in lines.items() if k > MAX_MODULE_LINES}
    long = {n: k for n, k in sorted(lines.items()) if k > MODULE_LINES}
    assert not too_long, f'modules over {MAX_MODULE_LINES} lines: {too_long}'
    assert len(long) <= LONG_MODULES_ALLOWED, (
        f'{len(long)} modules over {MODULE_LINES} lines (at most '
        f'{LONG_MODULES_ALLOWED}): {long}')


def test_functions_are_a_readable_size():
    """No function or method of repvgg_seg over FUNCTION_LINES lines
    (docstring included)."""
    long = [f'{module}.{name} ({lines} lines)'
            for module, path in sorted(_modules().items())
            for name, lines in _functions(_parsed(path))
            if lines > FUNCTION_LINES]
    assert long == [], f'functions over {FUNCTION_LINES} lines: {long}'


def test_size_checks_see_what_they_measure(tmp_path):
    """The function walk finds methods and nested functions, with their
    lengths."""
    source = ('class A:\n    def f(self):\n        def g():\n'
              '            pass\n        return g\n\n\ndef h():\n'
              '    return 1\n')
    assert list(_functions(ast.parse(source))) == [
        ('A.f', 4), ('A.f.g', 2), ('h', 2)]
    assert len(list(_functions(_parsed(osp.join(ROOT, 'runs.py'))))) > 10
