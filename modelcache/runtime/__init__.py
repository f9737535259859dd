"""Process plumbing shared by our programs: settings, logging, the Kubernetes connection, leader
election and a small HTTP server for probes and metrics. ``settings`` and ``logs`` are standard library
only (the fetcher's cache-hit path uses them); ``kube`` and ``leader`` bring the Kubernetes client."""
