"""An HTTP segmentation service on Ray Serve: batched engine calls across
requests, replicas on one machine or a cluster, limits, tokens and a web
page (:mod:`.service` the model, :mod:`.uploads` the request limits,
:mod:`.http` the FastAPI app, :mod:`.deployment` Serve's application,
:mod:`.server` starting it, :mod:`.load` the load generator,
:mod:`.benchmark` the service against ``tools/infer.py``). Needs the
``serve`` extra (``pip install -e '.[serve]'``)."""
from .options import OUTPUTS, ServeOptions

__all__ = ['OUTPUTS', 'ServeOptions']
