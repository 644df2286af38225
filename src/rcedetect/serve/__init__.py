"""The detector as a service: ``rce serve RUN_DIR`` answers a label or NOT SURE over HTTP, with a page to try it.

- :mod:`.app`: the FastAPI app (``/v1/predict``, ``/v1/info``, ``/v1/examples``, ``/healthz``, ``/metrics``,
  ``/docs``, the page at ``/``);
- :mod:`.engine`: the run's classifier and its calibrated detectors (the paper's three and the served one, any
  registered detector), one model pass per micro-batch;
- :mod:`.batching`: the micro-batcher; :mod:`.parsing`: request bodies to images; :mod:`.limits`: the limits
  and the one-line 4xx errors; :mod:`.auth`: the optional bearer token; :mod:`.metrics`: Prometheus metrics
  (prometheus-client, one registry per app); :mod:`.runs`: which model a folder names and its adversarial
  examples; :mod:`.examples`: images for the page (with ``--examples`` files); :mod:`.page`: the page's files;
  :mod:`.server`: the socket and uvicorn; :mod:`.protocol`: uvicorn's HTTP/1.1 with a header timeout and one-line
  JSON refusals; :mod:`.spawn`: the server in a child process (tests, benchmarks).

Needs the ``serve`` extra (``pip install 'rcedetect[serve]'``: FastAPI, uvicorn, python-multipart,
prometheus-client).

Layer: above :mod:`rcedetect.report`; imports every part below it (``reproduce`` for which model a run folder
names, ``evaluation.calibrated`` for the command line's detectors), never the commands.
"""
