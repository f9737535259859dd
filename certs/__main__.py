"""`python -m certs local --dir DIR --dns NAME --ip ADDR`: a CA and serving certificate as files.

The cluster mode (a Secret, the caBundle of the webhook configuration, rotation) builds on this.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from certs.authority import create_ca, issue_serving_cert, service_dns_names, write_tls_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m certs", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    local = sub.add_parser("local", help="write ca.crt, tls.crt and tls.key into a directory")
    local.add_argument("--dir", type=Path, required=True, help="directory to write into")
    local.add_argument("--dns", action="append", default=[], help="a DNS name for the certificate (repeatable)")
    local.add_argument("--ip", action="append", default=[], help="an IP address for the certificate (repeatable)")
    local.add_argument("--service", help="a Service name: adds its cluster DNS names (with --namespace)")
    local.add_argument("--namespace", default="modelcache-system")
    args = parser.parse_args(argv)
    dns = list(args.dns) + (service_dns_names(args.service, args.namespace) if args.service else [])
    if not dns and not args.ip:
        parser.error("give at least one --dns, --ip or --service")
    ca = create_ca()
    write_tls_dir(args.dir, issue_serving_cert(ca, dns, ip_addresses=args.ip), ca)
    print(f"wrote {args.dir}/ca.crt, tls.crt and tls.key for {', '.join(dns + args.ip)}")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
