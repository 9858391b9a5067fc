"""How the service runs: :class:`ServeOptions`, one dataclass for
``tools/serve.py``, the Serve application builder and the config file it
writes, checked before anything starts (:meth:`ServeOptions.check`)."""
import ipaddress
import os.path as osp
from dataclasses import asdict, dataclass, fields
from typing import Literal, Optional, Union

from ..errors import InputError, check_choice

#: what ``POST /v1/segment?output=`` returns
OUTPUTS = ('labels', 'color', 'overlay', 'json')


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine only."""
    if host == 'localhost':
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class ServeOptions:
    """The model (``config``, ``weights``, ``engine``, ``precision``,
    ``device``, runtime ``threads`` and OpenVINO ``streams``), the
    replicas (``replicas``: a number or ``'auto'`` for Serve's autoscaling
    between 1 and ``max_replicas``; ``cpus_per_replica``,
    ``gpus_per_replica``), the batching across requests
    (``max_batch_size`` images an engine call, ``batch_wait_ms`` the
    longest wait for more), the limits (``max_ongoing`` requests a replica
    holds, ``max_queued`` waiting beyond those before a 503,
    ``request_timeout_s`` before a 504, ``max_body_bytes`` and
    ``max_pixels`` of an upload), HTTP (``host``, ``port``, ``token_file``
    or ``insecure`` off loopback), the Ray cluster (``address``: None
    starts a local one on 127.0.0.1; ``'auto'`` or ``HOST:PORT`` joins one;
    ``metrics_port``: the local one's Prometheus port), the application's
    name and the path it is served under (``route_prefix``, e.g. behind a
    gateway) and the overlay's ``opacity``."""
    config: str = ''
    weights: Optional[str] = None
    engine: str = 'torch'
    precision: str = 'fp32'
    device: Optional[str] = None
    threads: Optional[int] = None
    streams: Optional[int] = None
    cfg_options: Optional[dict] = None
    replicas: Union[int, Literal['auto']] = 1
    max_replicas: int = 4
    cpus_per_replica: float = 1.0
    gpus_per_replica: float = 0.0
    max_batch_size: int = 4
    batch_wait_ms: float = 5.0
    max_ongoing: int = 16
    max_queued: int = 32
    request_timeout_s: float = 30.0
    max_body_bytes: int = 20 * 2**20
    max_pixels: int = 4096 * 4096
    opacity: float = 0.5
    host: str = '127.0.0.1'
    port: int = 8000
    token_file: Optional[str] = None
    insecure: bool = False
    address: Optional[str] = None
    metrics_port: Optional[int] = None
    app_name: str = 'repvgg_seg'
    route_prefix: str = '/'

    def check(self) -> 'ServeOptions':
        """Refuse what cannot be served, with one line saying why: another
        host than loopback without a token (or ``insecure``), a token file
        that is missing or empty, limits that are no limits."""
        if not self.config:
            raise InputError('a config file is needed')
        if not osp.isfile(self.config):
            raise InputError(f'config not found: {self.config}')
        if self.weights is not None and not osp.isfile(self.weights):
            raise InputError(f'weights not found: {self.weights}')
        if self.replicas != 'auto' and (not isinstance(self.replicas, int)
                                        or self.replicas < 1):
            raise InputError(f'--replicas is a number >= 1 or auto, got '
                             f'{self.replicas!r}')
        for name in ('max_batch_size', 'max_ongoing', 'max_replicas',
                     'max_body_bytes', 'max_pixels', 'port'):
            if getattr(self, name) < 1:
                raise InputError(f'--{name.replace("_", "-")} must be >= 1, '
                                 f'got {getattr(self, name)}')
        for name in ('max_queued', 'batch_wait_ms'):
            if getattr(self, name) < 0:
                raise InputError(f'--{name.replace("_", "-")} must be >= 0, '
                                 f'got {getattr(self, name)}')
        if self.request_timeout_s <= 0:
            raise InputError('--request-timeout-s must be > 0, got '
                             f'{self.request_timeout_s}')
        if not self.route_prefix.startswith('/'):
            raise InputError(f'--route-prefix starts with /, got '
                             f'{self.route_prefix!r}')
        if not 0 <= self.opacity <= 1:
            raise InputError(f'--opacity is between 0 and 1, got '
                             f'{self.opacity}')
        if self.metrics_port is not None and (
                self.address or not 0 < self.metrics_port < 65536
                or self.metrics_port == self.port):
            raise InputError(
                f'--metrics-port {self.metrics_port}: a port of a local Ray '
                f'(not --address), other than --port {self.port}; a '
                'cluster exports its metrics where `ray start '
                '--metrics-export-port` says')
        if self.token_file is not None:
            read_token(self.token_file)
        elif not is_loopback(self.host) and not self.insecure:
            raise InputError(
                f'--host {self.host} serves other machines: give '
                '--token-file (a bearer token clients must send), or '
                '--insecure to serve them without one')
        return self

    def token(self) -> Optional[str]:
        """The bearer token clients must send (None: no token)."""
        return read_token(self.token_file) if self.token_file else None

    def as_dict(self) -> dict:
        """The options as plain values (a Serve config file's ``args``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> 'ServeOptions':
        """Options from a Serve config file's ``args`` or ``serve run``'s
        ``key=value`` arguments, which arrive as strings (``none`` is
        None); unknown keys are refused with the valid ones, a value that
        is not of its option's type in one line."""
        # pydantic (FastAPI's) converts the strings by the fields' types
        from pydantic import TypeAdapter, ValidationError
        known = sorted(f.name for f in fields(cls))
        for key in values:
            check_choice('serve option', key, known)
        values = {key: None if isinstance(value, str)
                  and value.lower() in ('none', 'null') else value
                  for key, value in values.items()}
        try:
            return TypeAdapter(cls).validate_python(values)
        except ValidationError as exc:
            errors = exc.errors()
            key, value = errors[0]['loc'][0], errors[0]['input']
            why = ' or '.join(e['msg'] for e in errors
                              if e['loc'][0] == key)
            raise InputError(f'serve option {key}: {why}, got {value!r}') \
                from None


def read_token(path: str) -> str:
    """The token in ``path`` (its first line, stripped); an
    :class:`InputError` for a missing, unreadable or empty file."""
    try:
        with open(path) as f:
            token = f.readline().strip()
    except OSError as exc:
        raise InputError(f'--token-file {path}: {exc.strerror or exc}') \
            from None
    if not token:
        raise InputError(f'--token-file {path} is empty')
    return token


__all__ = ['OUTPUTS', 'ServeOptions', 'is_loopback', 'read_token']
