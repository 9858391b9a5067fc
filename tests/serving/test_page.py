"""The web page at ``/`` in a real headless browser: Debian's Chromium
driven by Playwright, against the tiny model's app on 127.0.0.1.

What a user sees must be what the API answers: the labels the page decodes
from the labels PNG, the legend's classes and areas, the overlay's pixels
at the slider's ends (the palette, the image) and in between, the error
line of a refused upload, the token prompt of a guarded application at
its own route prefix; and the page loads nothing from anywhere else (it
has to work offline). The screenshot of a finished page is kept as a test
artefact in ``work_dirs/test_artifacts/serving_page.png``.

Skipped, with the reason, where ``/usr/bin/chromium`` or Playwright is
missing; ``.ci/run`` installs both, so CI runs it. No browser is
downloaded: Playwright drives the system's Chromium.
"""
import glob
import json
import os
import os.path as osp
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import List

import numpy as np
import pytest

from .conftest import TOKEN

CHROMIUM = '/usr/bin/chromium'
# no network of its own: no QUIC, updates, sync or background requests, so
# what the page loads is all the test sees
CHROMIUM_ARGS = ['--headless=new', '--no-sandbox', '--disable-gpu',
                 '--disable-quic', '--no-first-run',
                 '--disable-background-networking',
                 '--disable-component-update', '--disable-sync',
                 '--disable-dev-shm-usage']
REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SCREENSHOT = osp.join(REPO, 'work_dirs', 'test_artifacts',
                      'serving_page.png')
TIMEOUT_MS = 60_000

# at collection, before the package's server and model are set up for it
if not os.access(CHROMIUM, os.X_OK):
    pytest.skip(f'{CHROMIUM} is missing (Debian: apt-get install chromium); '
                '.ci/run installs it', allow_module_level=True)
sync_api = pytest.importorskip(
    'playwright.sync_api', reason='Playwright for Python is missing (pip '
    'install playwright); the test requirements have it')


@pytest.fixture(scope='module')
def browser():
    """One headless Chromium for the module (each test has its own fresh
    context: no storage, cache or token shared)."""
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM,
                                              args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@dataclass
class Visit:
    """A page of a fresh browser context and what it did: the URLs it
    requested, its uncaught errors and its console's error lines."""
    page: object
    requests: List[str] = field(default_factory=list)
    errors: List[str] = field(default_factory=list)
    console: List[str] = field(default_factory=list)

    def assert_clean(self, base: str) -> None:
        """Nothing loaded from outside ``base``, the application's URL
        (``data:`` is no load: the empty favicon), no script error, no
        resource the page's Content Security Policy had to refuse."""
        foreign = [url for url in self.requests
                   if not url.startswith(base + '/')
                   and not url.startswith('data:')]
        assert foreign == []
        assert self.errors == []
        assert [line for line in self.console
                if 'Content Security Policy' in line] == []


@pytest.fixture
def visit(browser):
    context = browser.new_context(viewport={'width': 1000, 'height': 700})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    result = Visit(page)
    page.on('request', lambda request: result.requests.append(request.url))
    page.on('pageerror', lambda error: result.errors.append(str(error)))
    page.on('console', lambda message: message.type == 'error'
            and result.console.append(message.text))
    yield result
    context.close()


@pytest.fixture
def origin(live_url):
    """The server's origin, ``http://127.0.0.1:<port>``."""
    return live_url.rstrip('/')


@pytest.fixture
def val_images(synthetic_root):
    images = sorted(glob.glob(osp.join(synthetic_root, 'leftImg8bit', 'val',
                                       '**', '*.png'), recursive=True))
    assert len(images) >= 2
    return images


# the API, asked directly


def call_api(url: str, output: str, data: bytes,
             content_type: str = 'image/png'):
    """``(status, body bytes)`` of ``POST /v1/segment?output=...``."""
    request = urllib.request.Request(
        f'{url}/v1/segment?output={output}', data=data, method='POST',
        headers={'Content-Type': content_type})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def api_labels(url: str, path: str) -> np.ndarray:
    import cv2
    with open(path, 'rb') as f:
        status, body = call_api(url, 'labels', f.read())
    assert status == 200, body
    return cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_UNCHANGED)


def api_classes(url: str, path: str) -> dict:
    with open(path, 'rb') as f:
        status, body = call_api(url, 'json', f.read())
    assert status == 200, body
    return json.loads(body)


def api_model(url: str) -> dict:
    with urllib.request.urlopen(f'{url}/v1/model', timeout=60) as response:
        return json.load(response)


# the page, driven and read back


def open_page(visit: Visit, url: str) -> None:
    visit.page.goto(url + '/')
    wait_for_model(visit.page)


def wait_for_model(page) -> None:
    """Until the page has the model's classes and palette."""
    page.wait_for_function("() => !document.getElementById('model')"
                           ".textContent.includes('loading')")


def wait_for_run(page, before: int) -> str:
    """The status once the upload after run ``before`` has finished."""
    page.wait_for_function(
        "(before) => Number(document.getElementById('status').dataset.run)"
        " > before", arg=before)
    return page.text_content('#status')


def current_run(page) -> int:
    return int(page.get_attribute('#status', 'data-run'))


def upload(page, files) -> str:
    """Set the file input and wait until the page is done (or failed)."""
    before = current_run(page)
    page.set_input_files('#file', files)
    return wait_for_run(page, before)


def drop(page, path: str) -> str:
    """Drop the file on the drop zone as a user's drag would."""
    before = current_run(page)
    with open(path, 'rb') as f:
        data = list(f.read())
    page.evaluate("""([bytes, name]) => {
        const file = new File([new Uint8Array(bytes)], name,
                              {type: 'image/png'});
        const transfer = new DataTransfer();
        transfer.items.add(file);
        document.getElementById('drop').dispatchEvent(new DragEvent(
            'drop', {dataTransfer: transfer, bubbles: true,
                     cancelable: true}));
    }""", [data, osp.basename(path)])
    return wait_for_run(page, before)


def page_labels(page) -> np.ndarray:
    shown = page.evaluate("""() => {
        const s = window.segmentation;
        return {width: s.width, height: s.height,
                labels: Array.from(s.labels)};
    }""")
    return np.array(shown['labels'], np.uint8).reshape(shown['height'],
                                                       shown['width'])


def canvas_rgb(page) -> np.ndarray:
    shown = page.evaluate("""() => {
        const canvas = document.getElementById('overlay');
        const context = canvas.getContext('2d');
        const {data} = context.getImageData(0, 0, canvas.width,
                                            canvas.height);
        return {width: canvas.width, height: canvas.height,
                data: Array.from(data)};
    }""")
    rgba = np.array(shown['data'], np.uint8).reshape(shown['height'],
                                                     shown['width'], 4)
    assert (rgba[..., 3] == 255).all()
    return rgba[..., :3]


def set_opacity(page, percent: int) -> np.ndarray:
    """The canvas once the slider is at ``percent`` and it is redrawn (on
    the next animation frame)."""
    page.fill('#opacity', str(percent))
    page.evaluate('() => new Promise((done) => requestAnimationFrame('
                  '() => requestAnimationFrame(done)))')
    assert page.text_content('#opacity-value') == f'{percent}%'
    return canvas_rgb(page)


def legend(page) -> list:
    """The legend's rows: ``(class id, pixels, name and area text)``."""
    return [(int(row.get_attribute('data-class-id')),
             int(row.get_attribute('data-pixels')),
             ' '.join(row.inner_text().split()))
            for row in page.query_selector_all('#legend tbody tr')]


def area_text(pixels: int, total: int) -> str:
    """The page's area: the exact ratio in per mille rounded half up."""
    tenths = (2 * 1000 * pixels + total) // (2 * total)
    return f'{tenths // 10}.{tenths % 10}%'


def to_fixed(value: float) -> str:
    """The page's milliseconds (JavaScript's ``toFixed(1)``): the float's
    exact value rounded half up, where Python's format rounds half to
    even (750.25 is 750.3 on the page, 750.2 in ``f'{750.25:.1f}'``)."""
    return str(Decimal(value).quantize(Decimal('0.1'),
                                       rounding=ROUND_HALF_UP))


# the tests


def test_page_shows_the_apis_segmentation(visit, origin, val_images):
    """Labels, legend and timings of a chosen file are the API's."""
    page = visit.page
    open_page(visit, origin)
    model = api_model(origin)
    assert model['engine'] in page.text_content('#model')
    assert upload(page, val_images[0]) == 'done'
    assert page.is_hidden('#error')

    expected = api_labels(origin, val_images[0])
    np.testing.assert_array_equal(page_labels(page), expected)

    answer = api_classes(origin, val_images[0])
    total = answer['width'] * answer['height']
    by_area = sorted(answer['classes'], key=lambda c: (-c['pixels'],
                                                       c['id']))
    assert legend(page) == [
        (c['id'], c['pixels'], f"{c['name']} {area_text(c['pixels'], total)}")
        for c in by_area]

    timings = page.evaluate('() => window.segmentation.timings')
    assert timings['total'] >= timings['inference'] > 0
    height, width = expected.shape
    assert page.text_content('#timing') == (
        f"{width}\u00d7{height} px \u00b7 server "
        f"{to_fixed(timings['total'])} ms "
        f"(inference {to_fixed(timings['inference'])} ms)")

    os.makedirs(osp.dirname(SCREENSHOT), exist_ok=True)
    page.screenshot(path=SCREENSHOT, full_page=True)
    assert osp.getsize(SCREENSHOT) > 0
    visit.assert_clean(origin)


def test_overlay_blends_image_and_palette(visit, origin, val_images):
    """0% is the image, 100% the palette colour of each pixel's class,
    and in between the blend the slider sets, redrawn as it moves."""
    import cv2
    page = visit.page
    open_page(visit, origin)
    assert upload(page, val_images[0]) == 'done'
    image = cv2.imread(val_images[0], cv2.IMREAD_COLOR)[..., ::-1]
    labels = api_labels(origin, val_images[0])
    palette = np.array(api_model(origin)['palette'], np.uint8)
    has_class = labels < len(palette)
    colours = np.where(has_class[..., None],
                       palette[np.minimum(labels, len(palette) - 1)], image)

    np.testing.assert_array_equal(set_opacity(page, 100), colours)
    np.testing.assert_array_equal(set_opacity(page, 0), image)
    blend = image + (colours.astype(np.float64) - image) * 0.37
    partial = set_opacity(page, 37)
    np.testing.assert_array_equal(partial, np.round(blend).astype(np.uint8))
    differs = (colours != image).any(-1)
    assert differs.any()
    assert (partial != image)[differs].any()
    visit.assert_clean(origin)


def test_dropped_image_is_segmented(visit, origin, val_images):
    """An image dropped on the drop zone goes the same way as a chosen
    one, and replaces what was shown."""
    page = visit.page
    open_page(visit, origin)
    assert upload(page, val_images[0]) == 'done'
    assert drop(page, val_images[1]) == 'done'
    np.testing.assert_array_equal(page_labels(page),
                                  api_labels(origin, val_images[1]))
    pixels = {c['id']: c['pixels']
              for c in api_classes(origin, val_images[1])['classes']}
    assert {row[0]: row[1] for row in legend(page)} == pixels
    visit.assert_clean(origin)


def test_image_the_browser_cannot_show(visit, origin, val_images, tmp_path):
    """A TIFF, which the server reads and Chromium does not: the classes
    are still the API's, drawn on grey, and the page says why."""
    import cv2
    path = tmp_path / 'street.tiff'
    cv2.imwrite(str(path), cv2.imread(val_images[0], cv2.IMREAD_COLOR))
    page = visit.page
    open_page(visit, origin)
    assert upload(page, str(path)) == 'done'
    with open(path, 'rb') as f:
        status, body = call_api(origin, 'labels', f.read(), 'image/tiff')
    assert status == 200
    np.testing.assert_array_equal(
        page_labels(page),
        cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_UNCHANGED))
    assert 'cannot show the image' in page.text_content('#note')
    assert (set_opacity(page, 0) == 128).all()
    visit.assert_clean(origin)


def test_refused_upload_shows_the_apis_reason(visit, origin, val_images):
    """A text file is refused (415) with the API's one line, and nothing
    of an earlier result stays on screen."""
    page = visit.page
    open_page(visit, origin)
    assert upload(page, val_images[0]) == 'done'
    text = b'not an image\n'
    status, body = call_api(origin, 'labels', text, 'text/plain')
    assert status == 415
    reason = json.loads(body)['detail']
    assert upload(page, {'name': 'notes.txt', 'mimeType': 'text/plain',
                         'buffer': text}) == 'error'
    assert page.text_content('#error') == reason
    assert page.is_visible('#error')
    assert page.is_hidden('#result')
    assert legend(page) == []
    visit.assert_clean(origin)


def test_page_asks_for_the_token(visit, guarded_url, val_images):
    """An application behind a token, at its own route prefix: the page
    is served without it, asks for it when the API answers 401, asks again
    when it is refused, and keeps it for the session (a reload does not
    ask); its requests stay under the application's prefix."""
    page = visit.page
    url = guarded_url
    page.goto(url + '/')
    page.wait_for_selector('#token-form', state='visible')
    assert page.text_content('#token-reason') == \
        'This service needs a token.'
    assert page.get_attribute('#token', 'type') == 'password'

    page.fill('#token', TOKEN + '-not')
    page.click('#token-form button')
    page.wait_for_function(
        "() => document.getElementById('token-reason')"
        ".textContent.includes('refused')")
    assert page.is_visible('#token-form')

    page.fill('#token', TOKEN)
    page.click('#token-form button')
    wait_for_model(page)
    assert page.is_hidden('#token-form')
    assert upload(page, val_images[0]) == 'done'
    assert legend(page) != []

    page.reload()
    wait_for_model(page)
    assert page.is_hidden('#token-form')
    assert upload(page, val_images[1]) == 'done'
    assert page.evaluate('() => Object.values(sessionStorage)') == [TOKEN]
    visit.assert_clean(url)
