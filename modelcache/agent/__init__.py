"""The cache agent: scheduled purge of unused models beside each cache volume, and the cache's metrics."""
