"""What every component agrees on; standard library only, so any of them can import it cheaply.

- ``annotations``: the ``modelcache.io/*`` annotations and their strict parsers;
- ``sources``: ``hf://``, ``s3://`` and ``https://`` sources;
- ``keys``: the model key every pod naming the same model meets on the volume;
- ``wire``: what the webhook puts into a pod and the fetcher reads back (names, paths, env);
- ``quantities``: the one grammar of sizes and durations;
- ``volumes``: the volume status document the controller writes and the webhook reads;
- ``errors``: a value that breaks the contract, and the failure kinds of a fetch (exit codes, reasons).
"""

from typing import Any

JsonObject = dict[str, Any]  # a Kubernetes object or AdmissionReview, as plain JSON
