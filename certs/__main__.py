"""Certificates for the webhook.

`python -m certs local --dir DIR --dns NAME --ip ADDR`: a CA and a serving certificate as files.
`python -m certs cluster [--every 1h]`: the same on a cluster: Secrets, the caBundle of the
MutatingWebhookConfiguration, rotation before expiry (certs/cluster.py). Once, as a Job or init
container; or in a loop. The modelcache controller runs the same reconcile on its own.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from certs.authority import create_ca, issue_serving_cert, service_dns_names, write_tls_dir
from modelcache.runtime.logs import FORMATS, configure_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m certs", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    local = sub.add_parser("local", help="write ca.crt, tls.crt and tls.key into a directory")
    local.add_argument("--dir", type=Path, required=True, help="directory to write into")
    local.add_argument("--dns", action="append", default=[], help="a DNS name for the certificate (repeatable)")
    local.add_argument("--ip", action="append", default=[], help="an IP address for the certificate (repeatable)")
    local.add_argument("--service", help="a Service name: adds its cluster DNS names (with --namespace)")
    local.add_argument("--namespace", default="modelcache-system")
    cluster = sub.add_parser("cluster", help="create or rotate the webhook's certificates on the cluster")
    cluster.add_argument("--namespace", default="modelcache-system", help="namespace of the webhook and Secrets")
    cluster.add_argument("--service", default="modelcache-webhook", help="the webhook's Service")
    cluster.add_argument("--secret", default="modelcache-webhook-tls", help="Secret the webhook mounts")
    cluster.add_argument("--ca-secret", default="modelcache-ca", help="Secret holding the CA key")
    cluster.add_argument("--webhook-configuration", default="modelcache-webhook")
    cluster.add_argument("--every", type=float, default=0, help="repeat every N seconds (default: once)")
    cluster.add_argument("--log-format", choices=FORMATS, default="text", help="text, or json lines")
    args = parser.parse_args(argv)
    if args.command == "cluster":
        return _cluster(args)
    dns = list(args.dns) + (service_dns_names(args.service, args.namespace) if args.service else [])
    if not dns and not args.ip:
        parser.error("give at least one --dns, --ip or --service")
    ca = create_ca()
    write_tls_dir(args.dir, issue_serving_cert(ca, dns, ip_addresses=args.ip), ca)
    print(f"wrote {args.dir}/ca.crt, tls.crt and tls.key for {', '.join(dns + args.ip)}")  # noqa: T201
    return 0


def _cluster(args: argparse.Namespace) -> int:
    from certs.cluster import reconcile_certificates  # the Kubernetes API only for this mode
    from modelcache.runtime.kube import connect

    configure_logging(fmt=args.log_format)
    api = connect()
    while True:
        changes = reconcile_certificates(
            api,
            namespace=args.namespace,
            service=args.service,
            tls_secret=args.secret,
            ca_secret=args.ca_secret,
            webhook_configuration=args.webhook_configuration,
            now=datetime.now(UTC),
        )
        if not changes:
            logging.info("certificates: up to date")
        if args.every <= 0:
            return 0
        time.sleep(args.every)


if __name__ == "__main__":
    sys.exit(main())
