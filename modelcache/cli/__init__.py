"""The `modelcache` command: see, warm, refresh, verify and purge a model cache (and ask the cluster)."""
