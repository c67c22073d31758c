"""The build's constraints file: the image's torch, torchvision and numpy, pinned, and checked after install.

The Dockerfile first writes ``pip freeze | grep -E '^(torch|torchvision|numpy)=='``. AWS's images
install some wheels they built themselves, which ``pip freeze`` prints as ``torch @ file:///...``,
so a pin the grep missed is taken from the installed distribution's metadata. Installing
skuvision under these constraints can then never replace the torch build SMDDP was compiled for;
``--check`` proves it after the install.

    python docker/pin_constraints.py docker/constraints.txt           # complete the pins
    python docker/pin_constraints.py --check docker/constraints.txt   # installed == pinned, or exit 1
"""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

PINNED = ("torch", "torchvision", "numpy")


def read_pins(path: Path) -> dict[str, str]:
    lines = path.read_text().split() if path.is_file() else []
    return {line.split("==")[0].lower(): line.split("==", 1)[1] for line in lines if "==" in line}


def complete(path: Path) -> int:
    pins = read_pins(path)
    for name in PINNED:
        if name not in pins:
            try:
                pins[name] = version(name)
            except PackageNotFoundError:
                print(
                    f"pin_constraints: {name} is not installed in this image; is it the PyTorch base image?",
                    file=sys.stderr,
                )
                return 1
    path.write_text("".join(f"{name}=={pins[name]}\n" for name in PINNED))
    print(path.read_text(), end="")
    return 0


def check(path: Path) -> int:
    pins = read_pins(path)
    changed = [f"{name} {pins.get(name)} -> {version(name)}" for name in PINNED if pins.get(name) != version(name)]
    if changed:
        print(f"pin_constraints: the install replaced the image's {', '.join(changed)}", file=sys.stderr)
        return 1
    print("pin_constraints: " + ", ".join(f"{name}=={pins[name]}" for name in PINNED) + " kept")
    return 0


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", default="docker/constraints.txt", type=Path)
    parser.add_argument("--check", action="store_true", help="fail unless the installed versions equal the pins")
    args = parser.parse_args(argv)
    return check(args.path) if args.check else complete(args.path)


if __name__ == "__main__":
    sys.exit(main())
