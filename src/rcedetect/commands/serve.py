"""``rce serve RUN_DIR [--metric kd] [--fpr 0.05] [--host 127.0.0.1] [--port 8000]``: the detector over HTTP.

Loads the run's classifier and its calibrated detectors once (fitted and cached as ``rce detect`` does), then
serves ``POST /v1/predict`` (label or NOT SURE per image, with every detector's score and the threshold), ``GET
/v1/info``, ``/healthz``, ``/metrics`` (Prometheus), the OpenAPI docs at ``/docs`` and a page at ``/`` to draw,
upload or pick an image. ``RUN_DIR`` is a run folder or a ``rce reproduce`` output (``--model NAME`` picks the
model). The limits (their defaults and ranges in :class:`rcedetect.serve.limits.Limits`, the status of each
refusal in :mod:`rcedetect.serve.limits`) bound every request; a request's headers must arrive within 10 s.
"""

from __future__ import annotations

from ..core.settings import float_arg, int64_arg, threads_arg
from ..serve.limits import MAX_BODY_MB, MAX_MEMORY_MB, MIB, Limits
from . import add_fit_options, fit_options


def add_parser(sub) -> None:
    from ..detectors import names

    p = sub.add_parser("serve", help="serve the detector over HTTP: label or NOT SURE, with a page to try it",
                       description="Serve a run's classifier and calibrated detector over HTTP: each image gets a "
                                   "label or NOT SURE; a page at / lets you try it.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder (checkpoint.json) or a rce reproduce output folder")
    p.add_argument("--model", help="the model of a rce reproduce output (default: its main RCE model)")
    p.add_argument("--metric", default="kd", choices=names(),
                   help="the detector that decides: kd (default), non_me, confidence, or a baseline (lid, "
                        "mahalanobis, kd_bu: fitted on --fit-on)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; another warns without a token)")
    p.add_argument("--port", type=int64_arg, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--token-file", metavar="PATH",
                   help="require 'Authorization: Bearer TOKEN' on every route but /healthz and the page's files; "
                        "TOKEN is the file's content, stripped (the page reads it from /#token=TOKEN or asks)")
    p.add_argument("--examples", action="append", default=[], metavar="PATH",
                   help="adversarial examples for the page's picker: an exported .npz or a rce attack folder "
                        "(repeat for more)")
    add_fit_options(p, quiet="no progress bars while fitting the detectors")
    d = Limits()  # the defaults
    p.add_argument("--max-body-mb", type=float_arg(0, MAX_BODY_MB, low_open=True), default=d.max_body_bytes / MIB,
                   help=f"largest request body in MiB (at most {MAX_BODY_MB})")
    p.add_argument("--max-batch", type=int64_arg, default=d.max_batch, help="most images per request and per model pass")
    p.add_argument("--batch-window-ms", type=float, default=1000 * d.batch_window_s,
                   help="how long a request waits for others to share its model pass, in ms")
    p.add_argument("--timeout-s", type=float, default=d.timeout_s,
                   help="per-request time limit in seconds, reading its body included; 408 after it")
    p.add_argument("--max-queue", type=int64_arg, default=d.max_queue_images,
                   help="most images waiting for the model; 429 beyond")
    p.add_argument("--max-memory-mb", type=float_arg(0, MAX_MEMORY_MB, low_open=True), default=d.max_memory_bytes / MIB,
                   help="memory in MiB the bodies in progress may take to decode, all together; 429 beyond")
    p.add_argument("--max-inflight", type=int64_arg, default=d.max_inflight, help="most requests in progress; 429 beyond")
    p.add_argument("--threads", type=threads_arg, default=None, help="CPU threads of the model (default: torch's)")
    p.add_argument("--log-level", default="warning", choices=("critical", "error", "warning", "info", "debug"),
                   help="uvicorn's log level")
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.set_defaults(run=run)


def run(args) -> int:
    import torch

    from ..core.errors import ConfigError
    from ..serve import auth, engine, runs, server
    from ..serve.examples import Examples, check_given, load_given

    try:  # the serve extra
        import fastapi  # noqa: F401
        import prometheus_client  # noqa: F401
        import python_multipart  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise ConfigError(f"rce serve needs the serve extra ({e.name} is missing): pip install 'rcedetect[serve]'") \
            from None
    limits = Limits(max_body_bytes=int(args.max_body_mb * MIB), max_batch=args.max_batch, timeout_s=args.timeout_s,
                    batch_window_s=args.batch_window_ms / 1000, max_queue_images=args.max_queue,
                    max_inflight=args.max_inflight, max_memory_bytes=int(args.max_memory_mb * MIB)).check()
    if args.threads is not None:  # threads_arg: at least 1
        torch.set_num_threads(args.threads)
    token = auth.read_token(args.token_file) if args.token_file is not None else None
    opts = fit_options(args, *engine.served_metrics(args.metric))
    served = runs.resolve(args.run_dir, args.model)
    given = load_given(args.examples, served.sources.values())  # unreadable files fail now, their shape below
    sock = server.bind(args.host, args.port)  # a busy port fails now, before minutes of loading
    try:
        from ..serve.app import create_app

        eng = engine.load(served, args.metric, opts, args.device,
                          before_fit=lambda ckpt: check_given(given, ckpt.classifier))
        app = create_app(eng, limits, Examples(served.sources, eng.test, eng.shape, given), token=token)
    except BaseException:
        sock.close()
        raise
    d = eng.detector
    line = (f"rce serve: {served.name} ({eng.classifier.objective}, {d.metric} detector, threshold {d.threshold:.6g} "
            f"at FPR {d.fpr:g}{', token required' if token else ''})")
    return server.run(app, sock, args.host, ready_line=line, log_level=args.log_level, access_log=args.access_log,
                      token=token is not None)
