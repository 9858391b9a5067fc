"""Starting and stopping the service (``tools/serve.py``):
:class:`SegmentationServer` starts Ray (a local one on 127.0.0.1, or joins
a cluster at ``address``), Serve's HTTP proxy on ``host:port`` and the
application, and waits until it answers; a model that fails to load stops
everything it started and raises one :class:`ServeError` line, never
leaving a half-started server."""
import os
import sys
import time
from typing import Optional

from mmengine.logging import print_log

from ..engines import get_engine
from ..errors import RepVGGSegError
from .options import ServeOptions

#: Ray's single-machine switch, read when ``ray`` is imported: with it off
#: the node's address is 127.0.0.1 and every Ray service (GCS, raylet,
#: workers, agents) listens on loopback only; with it on, Ray 2.60 takes
#: the machine's address even when told 127.0.0.1, and its gRPC servers
#: listen on all addresses
RAY_CLUSTER_ENV = 'RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER'


def keep_ray_on_loopback() -> None:
    """Make a local Ray listen on 127.0.0.1 only (before ``ray`` is
    imported; :func:`init_ray` warns where it was too late)."""
    os.environ[RAY_CLUSTER_ENV] = '0'


class ServeError(RepVGGSegError):
    """The service could not start (the reason in one line)."""


def init_ray(address: Optional[str], num_cpus: Optional[int] = None,
             metrics_port: Optional[int] = None):
    """Ray for the service: joined at ``address`` (``'auto'`` or
    ``HOST:PORT`` of ``ray start --head``), else a local one whose services
    bind to 127.0.0.1 only (no dashboard; Prometheus metrics at
    ``metrics_port``, Ray's choice without it)."""
    if not address:
        keep_ray_on_loopback()
    import ray
    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, logging_level='WARNING')
        return
    ray.init(_node_ip_address='127.0.0.1', include_dashboard=False,
             num_cpus=num_cpus, logging_level='WARNING',
             _metrics_export_port=metrics_port)
    node_ip = ray.util.get_node_ip_address()
    if node_ip != '127.0.0.1':
        print_log(f'Ray listens on {node_ip}, not only on 127.0.0.1: ray '
                  f'was imported before {RAY_CLUSTER_ENV}=0 was set',
                  logger='current', level=30)


def last_line(text: str) -> str:
    """The line of a (Ray-wrapped) traceback that says what failed: its
    last line that is not a frame, without the exception's module path
    (``UnsafeCheckpointError: refused to load ...``)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if not line.startswith(('File ', '^', '~', 'Traceback')):
            name, sep, rest = line.partition(': ')
            if sep and '.' in name and ' ' not in name:
                return f'{name.rsplit(".", 1)[1]}: {rest}'
            return line
    return ''


def failure_reason(app_name: str, exc: BaseException) -> str:
    """Why application ``app_name`` failed to deploy: its replicas' error
    (Serve's deployment status holds their traceback), else ``exc``'s."""
    from ray import serve
    try:
        app = serve.status().applications.get(app_name)
        messages = [d.message for d in app.deployments.values()]
    except Exception:  # Serve itself failed: the exception says why
        messages = []
    for message in messages + [str(exc)]:
        reason = last_line(message or '')
        if reason:
            return reason
    return type(exc).__name__


class SegmentationServer:
    """The service of ``options`` on Ray Serve (see the module docstring):
    :meth:`start`, :attr:`url`, :meth:`stop`; a context manager."""

    def __init__(self, options: ServeOptions):
        self.options = options.check()
        self.started_ray = False

    @property
    def url(self) -> str:
        host = self.options.host
        prefix = self.options.route_prefix.rstrip('/')
        return f'http://{"127.0.0.1" if host == "0.0.0.0" else host}:' \
               f'{self.options.port}{prefix}'

    def check_model_files(self) -> None:
        """What can be known before any process starts: the engine runs
        here and takes these weights."""
        engine = get_engine(self.options.engine)
        engine.require()
        engine.require_precision(self.options.precision)
        engine.check_weights(self.options.weights)

    def start(self) -> 'SegmentationServer':
        """Start Ray (where not joined), Serve's proxy and the application;
        return once every replica is loaded and warm."""
        self.check_model_files()
        ray = sys.modules.get('ray')
        self.started_ray = not self.options.address and not (
            ray is not None and ray.is_initialized())
        init_ray(self.options.address,
                 metrics_port=self.options.metrics_port)
        from ray import serve

        from .deployment import build_application, proxy_timeout_s
        try:
            serve.start(http_options=dict(
                host=self.options.host, port=self.options.port,
                request_timeout_s=proxy_timeout_s(self.options)))
            start = time.perf_counter()
            serve.run(build_application(self.options, self.options.token()),
                      name=self.options.app_name,
                      route_prefix=self.options.route_prefix,
                      blocking=False)
            print_log(f'serving {self.options.config} on {self.url} '
                      f'({self.options.engine}, {self.options.precision}) '
                      f'after {time.perf_counter() - start:.1f} s',
                      logger='current')
            if self.started_ray and self.options.metrics_port:
                print_log('Prometheus metrics at http://127.0.0.1:'
                          f'{self.options.metrics_port}/metrics',
                          logger='current')
        except BaseException as exc:
            reason = failure_reason(self.options.app_name, exc)
            self.stop()
            if isinstance(exc, (KeyboardInterrupt, RepVGGSegError)):
                raise
            raise ServeError(f'the service did not start: {reason}') \
                from None
        return self

    def stop(self) -> None:
        """Remove the application; shut Serve and Ray down where this
        server started them."""
        import ray
        from ray import serve
        if not ray.is_initialized():
            return
        try:
            if self.started_ray:
                serve.shutdown()
            else:
                serve.delete(self.options.app_name)
        finally:
            if self.started_ray:
                ray.shutdown()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def wait(self) -> None:
        """Serve until interrupted (Ctrl-C, SIGTERM)."""
        import signal
        import threading
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            while not stop.wait(1):
                pass
        except KeyboardInterrupt:
            pass


def write_serve_config(options: ServeOptions, path: str) -> None:
    """A Serve config file of ``options`` for ``serve deploy``."""
    import yaml

    from ..io.files import atomic_write_bytes
    from .deployment import serve_config
    options.check()
    atomic_write_bytes(yaml.safe_dump(serve_config(options),
                                      sort_keys=False).encode(), path)
