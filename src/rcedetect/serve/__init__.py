"""The detector as a service: ``rce serve RUN_DIR`` answers a label or NOT SURE over HTTP, with a page to try it.

:mod:`.app` (the routes) builds on :mod:`.engine` (the model and its detectors), :mod:`.batching`,
:mod:`.parsing` (bodies to images), :mod:`.limits` (the limits and the 4xx errors), :mod:`.auth`, :mod:`.metrics`
and :mod:`.examples`; :mod:`.server` and :mod:`.protocol` run it under uvicorn, :mod:`.runs` says
which model a folder names, :mod:`.spawn` runs the server in a child process (tests, benchmarks). Needs the
``serve`` extra (``pip install 'rcedetect[serve]'``: FastAPI, uvicorn, python-multipart, prometheus-client).

Layer: above :mod:`rcedetect.report`; imports every part below it (``reproduce`` for which model a run folder
names, ``evaluation.calibrated`` for the command line's detectors), never the commands.
"""
