"""The HTTP API, a FastAPI app over a :class:`~.service.SegmentationService`
(:func:`create_app`): ``POST /v1/segment``, ``GET /v1/model``, health
(``/healthz``) and readiness (``/readyz``), the web page at ``/`` and
OpenAPI at ``/docs`` and ``/openapi.json``.

Every refusal is one status and one line of reason, ``{"detail": ...}``;
the limits are checked before the work they guard: the body's size while
it is read (413, never more than the limit held in memory), the type and
the pixel count from the image's header before decoding (415, 400, 413),
the request's time while it waits for its batch (504). A token, where
one is set, is compared in constant time (``hmac.compare_digest``) on
every endpoint but health and the page itself (the page asks for it and
sends it). Nothing of an image is logged.
"""
import asyncio
import hmac
import time
from importlib import resources
from typing import Literal, Optional

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .options import OUTPUTS
from .service import SegmentationService
from .uploads import RequestError, decode_upload, media_type

#: the response's media type of each output
OUTPUT_TYPES = {'labels': 'image/png', 'color': 'image/png',
                'overlay': 'image/jpeg', 'json': 'application/json'}

_SEGMENT_BODY = {
    'required': True,
    'content': {
        'multipart/form-data': {'schema': {
            'type': 'object', 'required': ['file'],
            'properties': {'file': {'type': 'string', 'format': 'binary'}}}},
        **{kind: {'schema': {'type': 'string', 'format': 'binary'}}
           for kind in ('image/png', 'image/jpeg', 'image/bmp', 'image/webp',
                        'image/tiff', 'application/octet-stream')}
    }
}


def page_html() -> str:
    """The web page (``static/index.html`` of this package)."""
    return resources.files(__package__).joinpath(
        'static', 'index.html').read_text(encoding='utf-8')


def _error(status: int, reason: str, headers: Optional[dict] = None):
    return JSONResponse({'detail': reason}, status_code=status,
                        headers=headers)


def _one_line(exc: RequestValidationError) -> str:
    """FastAPI's validation errors as one line: where and what."""
    parts = []
    for error in exc.errors():
        where = '.'.join(str(p) for p in error.get('loc', ())[1:]) or 'body'
        if error.get('type') == 'literal_error':
            parts.append(f'{where}: unknown {error.get("input")!r}; valid: '
                         f'{", ".join(OUTPUTS)}')
        else:
            parts.append(f'{where}: {error.get("msg")}')
    return '; '.join(parts)


async def read_body(request: Request, limit: int) -> bytes:
    """The request's body, refused with 413 as soon as it is longer than
    ``limit`` bytes (by its Content-Length, or while it is read)."""
    declared = request.headers.get('content-length')
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f'the body has {declared} bytes; the limit '
                           f'is {limit}')
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f'the body is over the limit of {limit} '
                               'bytes')
        chunks.append(chunk)
    return b''.join(chunks)


async def upload_of(request: Request, limit: int):
    """``(bytes, content type)`` of the image: the raw body, or the
    ``file`` part of a multipart form."""
    body = await read_body(request, limit)
    kind = media_type(request.headers.get('content-type'))
    if kind != 'multipart/form-data':
        return body, kind
    # the form is parsed from the body read under the limit: a request
    # over the same scope whose body is those bytes
    async def body_again():
        return {'type': 'http.request', 'body': body, 'more_body': False}

    try:
        form = await Request(request.scope, body_again).form(
            max_files=1, max_fields=8)
    except Exception as exc:  # starlette raises several parse errors
        # inside an application starlette wraps them in an HTTPException
        why = getattr(exc, 'detail', exc)
        raise RequestError(400, f'the multipart body cannot be parsed: '
                           f'{why}') from None
    try:
        part = form.get('file')
        if part is None or isinstance(part, str):
            raise RequestError(400, 'the multipart body has no file part '
                               'named "file"')
        return await part.read(), media_type(part.content_type)
    finally:
        await form.close()


def create_app(service: SegmentationService, token: Optional[str] = None,
               replica: Optional[str] = None) -> FastAPI:
    """The API over ``service``; ``token``: the bearer token every endpoint
    but health and the page requires; ``replica``: this replica's id, sent
    with every answer as ``X-Replica`` (which replica answered)."""
    options = service.options
    # with a token, the docs are served behind it (_guarded_docs)
    app = FastAPI(title='repvgg-seg', version='1',
                  description='Semantic segmentation with RepVGG on '
                  f'{options.engine} ({options.precision})',
                  docs_url=None if token else '/docs', redoc_url=None,
                  openapi_url=None if token else '/openapi.json')

    def refuse(status: int, reason: str, headers=None) -> JSONResponse:
        service.metrics.refusal(status)
        return _error(status, reason, headers)

    @app.exception_handler(RequestError)
    async def refused(_: Request, exc: RequestError):
        return refuse(exc.status, exc.reason, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError):
        return refuse(422, _one_line(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException):
        return refuse(exc.status_code, str(exc.detail),
                      getattr(exc, 'headers', None))

    def authorized(request: Request) -> None:
        if token is None:
            return
        scheme, _, given = request.headers.get('authorization',
                                               '').partition(' ')
        if scheme.lower() != 'bearer' or not hmac.compare_digest(
                given.strip().encode(), token.encode()):
            raise RequestError(401, 'a bearer token is required '
                               '(Authorization: Bearer <token>)',
                               {'WWW-Authenticate': 'Bearer'})

    guarded = [Depends(authorized)]

    page = page_html()  # read once, not at every visit

    @app.get('/', response_class=HTMLResponse, include_in_schema=False)
    async def page_view():
        return HTMLResponse(page)

    @app.get('/healthz', summary='Liveness: the process answers')
    async def healthz():
        return {'status': 'ok'}

    @app.get('/readyz', summary='Readiness: the model is loaded and warm')
    async def readyz():
        if not service.ready:
            return _error(503, 'the model is loading')
        return {'status': 'ready'}

    @app.get('/v1/model', dependencies=guarded,
             summary='The model, its classes, engine and the limits')
    async def model():
        return service.model_info()

    @app.post('/v1/segment', dependencies=guarded,
              openapi_extra={'requestBody': _SEGMENT_BODY},
              responses={200: {'content': {t: {} for t in
                                           set(OUTPUT_TYPES.values())}}},
              summary='Segment an image (raw body or multipart "file")')
    async def segment(request: Request,
                      output: Literal[OUTPUTS] = Query(  # type: ignore
                          'labels', description='labels: train-id PNG; '
                          'color: palette PNG; overlay: JPEG; json: class '
                          'fractions, size and timings')):
        return await _segment(service, request, output, replica)

    if token is not None:
        _guarded_docs(app, authorized)
    return app


def _guarded_docs(app: FastAPI, authorized) -> None:
    """``/openapi.json`` and ``/docs`` behind the token."""
    from fastapi.openapi.docs import get_swagger_ui_html

    @app.get('/openapi.json', include_in_schema=False,
             dependencies=[Depends(authorized)])
    async def openapi():
        return JSONResponse(app.openapi())

    @app.get('/docs', include_in_schema=False,
             dependencies=[Depends(authorized)])
    async def docs(request: Request):
        # under a route prefix the schema is the prefix's
        root = request.scope.get('root_path', '').rstrip('/')
        return get_swagger_ui_html(openapi_url=f'{root}/openapi.json',
                                   title=app.title)


async def _segment(service: SegmentationService, request: Request,
                   output: str, replica: Optional[str]) -> Response:
    options = service.options
    start = time.perf_counter()
    data, kind = await upload_of(request, options.max_body_bytes)
    read = time.perf_counter()
    image = await run_in_threadpool(decode_upload, data, kind,
                                    options.max_pixels)
    decoded = time.perf_counter()
    left = options.request_timeout_s - (decoded - start)
    try:
        result = await asyncio.wait_for(service.segment(image),
                                        timeout=max(left, 0.001))
    except asyncio.TimeoutError:
        raise RequestError(504, 'the request took longer than its limit of '
                           f'{options.request_timeout_s:g} s') from None
    segmented = time.perf_counter()
    timings = dict(read=(read - start) * 1000,
                   decode=(decoded - read) * 1000, **result.timings_ms)
    if output == 'json':
        height, width = result.labels.shape
        body = dict(width=width, height=height,
                    classes=service.class_areas(result.labels),
                    batch_size=result.batch_size)
    else:
        body = await run_in_threadpool(service.encode, output, image, result)
    timings['encode'] = (time.perf_counter() - segmented) * 1000
    timings['total'] = (time.perf_counter() - start) * 1000
    service.metrics.stages(timings)
    headers = {'Server-Timing': ', '.join(
        f'{name};dur={ms:.2f}' for name, ms in timings.items()),
        'X-Batch-Size': str(result.batch_size)}
    if replica:
        headers['X-Replica'] = replica
    if output == 'json':
        body['timings_ms'] = {k: round(v, 3) for k, v in timings.items()}
        return JSONResponse(body, headers=headers)
    return Response(body, media_type=OUTPUT_TYPES[output], headers=headers)


__all__ = ['create_app', 'page_html', 'read_body']
