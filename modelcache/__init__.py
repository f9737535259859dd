"""modelcache: the code the webhook, the fetcher, the controller, the cache agent and the CLI share.

One installed package of ours, so nothing we ship takes a generic top-level name in a user's environment:

- ``modelcache.contract``: what every component agrees on (annotations, sources, model keys, the env
  wire between webhook and fetcher, the volume status document, failure kinds); standard library only.
- ``modelcache.cache``: the on-volume cache model (layout, markers, locks, usage, outcomes, inventory,
  removal, garbage collection, purge); the contract and the standard library only, no network library.
- ``modelcache.runtime``: process plumbing (settings, logging, the Kubernetes connection, leader
  election, a small HTTP server for probes and metrics).
- ``modelcache.controller``, ``modelcache.agent`` and ``modelcache.cli``: the programs built on them.
"""

__version__ = "0.1.0"
