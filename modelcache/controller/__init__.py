"""The modelcache controller: cache volumes per namespace, and the webhook's certificates."""
