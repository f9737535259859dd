"""The on-volume cache model, shared by the fetcher, the cache agent and the CLI.

The contract and the standard library only, and no network library: reading, removing and measuring the
cache never needs a source's library.

- ``layout``: every path of the volume, and the ``HubRepo`` view of a huggingface_hub repository;
- ``files``: atomic writes and links, durable renames, shared directory modes;
- ``markers``: the ready marker and the files it lists; ``digests``: sha256 and git blob sha1;
- ``locking`` and ``owners``: the per-model lock, its owner record and progress;
- ``usage``, ``outcomes``: last use, and one record per fetcher run;
- ``inventory``: what is on the volume; ``removal``, ``purge``: taking models off it safely.
"""
