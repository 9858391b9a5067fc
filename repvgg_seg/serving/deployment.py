"""The Ray Serve application: :class:`SegmentationDeployment` (a replica:
the service and its FastAPI ingress), its deployment settings from
:class:`~.options.ServeOptions` (replicas or autoscaling, Serve's
``max_ongoing_requests`` and ``max_queued_requests`` with a 503 and
``Retry-After`` beyond them, health checks, CPUs and GPUs a replica) and
:func:`build_app`, the application builder that ``tools/serve.py``,
``serve run`` and ``serve deploy`` use alike::

    serve run repvgg_seg.serving.deployment:build_app \\
        config=configs/x.py weights=work_dirs/x/model_int8.xml engine=openvino
    serve deploy serve.yaml        # written by tools/serve.py --write-config
"""
from typing import Optional

from ray import serve
from ray.serve.config import BackpressureConfig

from .options import ServeOptions

#: the builder's import path, for Serve config files
IMPORT_PATH = 'repvgg_seg.serving.deployment:build_app'
#: seconds a client is told to wait after a 503 (``Retry-After``)
RETRY_AFTER_S = 1


@serve.ingress()
class SegmentationDeployment:
    """One replica: the model of ``options`` (a dict of
    :class:`~.options.ServeOptions`) loaded and warmed up in the
    constructor, so Serve routes to it only once it answers; the HTTP API
    is built on it (``__serve_build_asgi_app__``, after the constructor).
    ``token``: the bearer token (else read from ``options``' token file on
    the replica's machine)."""

    def __init__(self, options: dict, token: Optional[str] = None):
        from .service import SegmentationService
        self.options = ServeOptions.from_dict(options)
        self.token = token or self.options.token()
        self.service = SegmentationService(self.options)

    def __serve_build_asgi_app__(self):
        from .http import create_app
        replica = serve.get_replica_context().replica_id.unique_id
        return create_app(self.service, self.token, replica)

    def check_health(self) -> None:
        """Serve's periodic health check: a replica that raises is
        replaced."""
        self.service.check_health()

    def __del__(self):
        service = getattr(self, 'service', None)
        if service is not None:
            service.close()


def deployment_settings(options: ServeOptions) -> dict:
    """``serve.deployment`` keyword arguments of ``options``."""
    settings = dict(
        name='SegmentationDeployment',
        max_ongoing_requests=options.max_ongoing,
        max_queued_requests=options.max_queued,
        backpressure_config=BackpressureConfig(status_code=503,
                                               retry_after_s=RETRY_AFTER_S),
        ray_actor_options=dict(num_cpus=options.cpus_per_replica,
                               num_gpus=options.gpus_per_replica),
        health_check_period_s=5, health_check_timeout_s=30,
        # a model that fails to load fails the same way again: once is
        # enough to report it
        max_constructor_retry_count=1)
    if options.replicas == 'auto':
        settings['autoscaling_config'] = dict(
            min_replicas=1, max_replicas=options.max_replicas,
            target_ongoing_requests=max(1, options.max_batch_size))
    else:
        settings['num_replicas'] = options.replicas
    return settings


def build_application(options: ServeOptions,
                      token: Optional[str] = None) -> serve.Application:
    """The application of ``options`` (checked), its replicas holding
    ``token`` where given."""
    options.check()
    deployment = serve.deployment(SegmentationDeployment,
                                  **deployment_settings(options))
    return deployment.bind(options.as_dict(), token)


def build_app(args: dict) -> serve.Application:
    """The application builder of ``serve run`` and Serve config files:
    ``args`` are :class:`~.options.ServeOptions` fields (``config``,
    ``weights``, ``engine`` ...)."""
    return build_application(ServeOptions.from_dict(dict(args)))


def serve_config(options: ServeOptions) -> dict:
    """A Serve config file for ``serve deploy`` (Ray's production
    convention): the HTTP options and one application built by
    :func:`build_app` with ``options`` as its arguments. Paths in it (the
    config, weights and token file) must exist on every node."""
    defaults = ServeOptions()
    # the cluster's settings are the file's or the cluster's, not the app's
    args = {key: plain(value) for key, value in options.as_dict().items()
            if value != getattr(defaults, key) and key not in (
                'host', 'port', 'address', 'metrics_port', 'app_name',
                'route_prefix')}
    return dict(
        proxy_location='EveryNode',
        http_options=dict(host=options.host, port=options.port,
                          request_timeout_s=proxy_timeout_s(options)),
        applications=[dict(name=options.app_name,
                           route_prefix=options.route_prefix,
                           import_path=IMPORT_PATH, args=args)])


def plain(value):
    """``value`` with tuples as lists (YAML's safe form)."""
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def proxy_timeout_s(options: ServeOptions) -> float:
    """Serve's end-to-end limit, a little over the request's own (which
    answers 504 first)."""
    return options.request_timeout_s + 5
