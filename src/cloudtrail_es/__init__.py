"""Load AWS CloudTrail log files from S3 into Elasticsearch / OpenSearch, and run Sigma rules over them.

Sub-packages, in layer order (``LAYERS``): each imports only from itself and those before it;
``tests/unit/test_layers.py`` fails on any upward import or any import cycle.

* ``core``: settings, errors, results, names, retry and the breaker, redaction, logs, codecs;
* ``documents``: an event -> the document we index (pure);
* ``read``: log-file keys, S3 objects, bytes -> events (the streaming decoder);
* ``write``: the cluster edge, engines, indexes, ``_bulk``, the write pipeline, dead letters;
* ``commands``: what the command-line tools share, and redrive, retention, dashboards;
* ``backfill``: the backfill command: file selection, parallel workers, state, export, queue;
* ``detections``: Sigma rules -> queries (build time, pySigma) and the detector (run time);
* ``aws``: the Lambda's routes, its triggers' shapes, EMF metrics, the stack's custom resource.

The modules left at this level are entry points kept at their documented names.
"""

#: The sub-packages from the bottom up; the modules at this level (entry points) sit above them all.
LAYERS = ("core", "documents", "read", "write", "commands", "backfill", "detections", "aws")
