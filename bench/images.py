"""Image sizes: `make images`, then `python -m bench.images [--tag dev --tag before]` (podman).

For each image and tag: the whole image, the layers it adds to its base (what a node pulls once the
base is cached), and the largest directories of its runtime virtualenv. Sizes are podman's, in MB
(10^6 bytes), as `podman images` prints them; the layer sizes are uncompressed. Prints markdown tables;
results and the commands go in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess

IMAGES = ("modelcache-fetcher", "modelcache-webhook")
SITE = "/opt/modelcache/lib/python3.11/site-packages"


def podman(*args: str) -> str:
    return subprocess.run(["podman", *args], capture_output=True, text=True, check=True, timeout=600).stdout


def own_layers(image: str) -> int:
    """Bytes of the layers the Dockerfile's last stage adds (each history entry after the base's)."""
    history = json.loads(podman("history", "--format", "json", image))
    base_id = podman("inspect", "--format", "{{.Id}}", base_of(image)).strip()
    total = 0
    for entry in history:  # newest first, down to the base
        if entry["id"].startswith(base_id[:12]) or base_id.startswith(entry["id"]):
            break
        total += int(entry["size"])
    return total


def base_of(image: str) -> str:
    """The FROM of the image's Dockerfile (the two share one base)."""
    name = image.split("/")[-1].split(":")[0].removeprefix("modelcache-")
    with open(f"Dockerfile.{name}") as dockerfile:
        return next(line.split()[1] for line in dockerfile if line.upper().startswith("FROM "))


def largest(image: str, count: int = 6) -> list[tuple[str, int]]:
    out = podman("run", "--rm", "--entrypoint", "sh", image, "-c", f"cd {SITE} && du -sk -- *")
    sizes = [(name, int(kib) * 1024) for kib, name in (line.split("\t", 1) for line in out.splitlines())]
    return sorted(sizes, key=lambda item: -item[1])[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tag", action="append", help="image tags to measure (default: dev)")
    tags = parser.parse_args().tag or ["dev"]
    print("| image | tag | whole image MB | its own layers MB | largest in the venv (MB) |")
    print("|---|---|---:|---:|---|")
    for name in IMAGES:
        for tag in tags:
            image = f"localhost/{name}:{tag}"
            whole = int(podman("image", "inspect", "--format", "{{.Size}}", image).strip())
            top = ", ".join(f"{item} {size / 1e6:.1f}" for item, size in largest(image))
            print(f"| {name} | {tag} | {whole / 1e6:.1f} | {own_layers(image) / 1e6:.1f} | {top} |")


if __name__ == "__main__":
    main()
