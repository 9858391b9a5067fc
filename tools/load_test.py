"""Load-test a running segmentation service (tools/serve.py) with a bounded
number of requests.

    python tools/load_test.py URL IMAGE [IMAGE ...|FOLDER]
        [--concurrency 8] [--requests 200] [--duration-s 60]
        [--timeout-s 30] [--output labels|color|overlay|json]
        [--token-file F] [--out-json report.json] [--no-progress]

URL: the service (http://127.0.0.1:8000, whose /v1/segment is used) or an
endpoint's full URL. The images (folders are searched recursively) are sent
in turn, CONCURRENCY at a time, until REQUESTS were sent or DURATION_S
passed; a request is waited for at most TIMEOUT_S. The report (on stdout:
requests/s of the 200s, latency percentiles of the 200s and of the 503s,
the count of each status) is also written as JSON with --out-json. The exit
status is 1 when no request was answered with 200.
"""
import argparse
import sys

from mmengine.logging import print_log

from repvgg_seg.cli import parse_tool_args, run_cli
from repvgg_seg.io.files import write_json


def parse_args(argv=None):
    from repvgg_seg.serving import OUTPUTS
    from repvgg_seg.serving.load import LoadOptions
    defaults = LoadOptions()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('url', help='the service or its endpoint')
    parser.add_argument('images', nargs='+',
                        help='image files or folders of images')
    parser.add_argument('--concurrency', type=int,
                        default=defaults.concurrency,
                        help='requests in flight at once')
    parser.add_argument('--requests', type=int, default=defaults.requests,
                        help='requests to send in all')
    parser.add_argument('--duration-s', type=float,
                        default=defaults.duration_s,
                        help='stop sending after this many seconds')
    parser.add_argument('--timeout-s', type=float,
                        default=defaults.timeout_s,
                        help='the longest wait for one response')
    parser.add_argument('--output', choices=list(OUTPUTS),
                        default=defaults.output,
                        help='what the service returns (output=)')
    parser.add_argument('--token-file',
                        help='the bearer token to send (its first line)')
    parser.add_argument('--out-json', help='write the report here')
    parser.add_argument('--no-progress', dest='progress',
                        action='store_false', help='no progress bar')
    return parse_tool_args(parser, argv)


def main(argv=None):
    from repvgg_seg.evaluation.images import image_files
    from repvgg_seg.serving.load import LoadOptions, check_url, run_load
    from repvgg_seg.serving.options import read_token
    args = parse_args(argv)
    check_url(args.url)  # before the images are listed: the cheap check
    options = LoadOptions(
        url=args.url, images=image_files(args.images), output=args.output,
        concurrency=args.concurrency, requests=args.requests,
        duration_s=args.duration_s, timeout_s=args.timeout_s,
        token=read_token(args.token_file) if args.token_file else None,
        progress=args.progress).check()
    print_log(f'sending up to {options.requests} requests of '
              f'{len(options.images)} images to {options.endpoint()} '
              f'({options.concurrency} at a time, for at most '
              f'{options.duration_s:g} s)', logger='current')
    report = run_load(options)
    print(report.table())
    if args.out_json:
        write_json(report.as_dict(), args.out_json)
        print_log(f'wrote {args.out_json}', logger='current')
    if not report.ok_ms:
        sys.stderr.write('no request was answered with 200\n')
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(run_cli(main))
