"""Starting and stopping the service (``tools/serve.py``):
:class:`SegmentationServer` starts Ray (a local one on 127.0.0.1, or joins
a cluster at ``address``), Serve's HTTP proxy on ``host:port`` and the
application, and waits until it answers; a model that fails to load stops
everything it started and raises one :class:`ServeError` line, never
leaving a half-started server."""
import time
from typing import Optional

from mmengine.logging import print_log

from ..engines import get_engine
from ..errors import RepVGGSegError
from .deployment import build_application, proxy_timeout_s
from .options import ServeOptions


class ServeError(RepVGGSegError):
    """The service could not start (the reason in one line)."""


def init_ray(address: Optional[str], num_cpus: Optional[int] = None):
    """Ray for the service: joined at ``address`` (``'auto'`` or
    ``HOST:PORT`` of ``ray start --head``), else a local one whose services
    bind to 127.0.0.1 only (no dashboard)."""
    import ray
    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, logging_level='WARNING')
    else:
        ray.init(_node_ip_address='127.0.0.1', include_dashboard=False,
                 num_cpus=num_cpus, logging_level='WARNING')


def last_line(exc: BaseException) -> str:
    """The line of a (Ray-wrapped) error that says what failed: the last
    non-empty line of its text that is not a traceback frame."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in reversed(lines):
        if not line.startswith(('File ', '^', '~', 'Traceback')):
            return line
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

    def start(self, timeout_s: float = 600) -> 'SegmentationServer':
        """Start Ray (where not joined), Serve's proxy and the application;
        return once every replica is loaded and warm."""
        import ray
        from ray import serve
        self.check_model_files()
        self.started_ray = not ray.is_initialized() and not \
            self.options.address
        init_ray(self.options.address)
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
        except BaseException as exc:
            self.stop()
            if isinstance(exc, (KeyboardInterrupt, RepVGGSegError)):
                raise
            raise ServeError(f'the service did not start: {last_line(exc)}'
                             ) from None
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
