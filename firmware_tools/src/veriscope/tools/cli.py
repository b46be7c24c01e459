"""The ``veriscope-tool`` command line."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    """Run the ``veriscope-tool`` command line and return its exit code."""
    parser = argparse.ArgumentParser(prog="veriscope-tool")
    parser.parse_args(argv)
    return 0
