"""The `stvsr` command: upsample (the main job), models, train, eval, devsets, bench, fetch-backbones."""
from __future__ import annotations

import argparse
import logging
import sys


def main(argv=None) -> int:
    from . import cli_backbones, cli_bench, cli_train, cli_upsample
    parser = argparse.ArgumentParser(prog="stvsr", description="spatiotemporal video super-resolution: more pixels and more frames (2x and 2x by default)")
    sub = parser.add_subparsers(dest="command", required=True)
    cli_upsample.add_parser(sub)
    cli_upsample.add_models_parser(sub)
    cli_train.add_parser(sub)
    cli_bench.add_parser(sub)
    cli_backbones.add_parser(sub)
    try:
        from . import cli_eval
        cli_eval.add_parser(sub)
    except ImportError:
        pass
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="stvsr: %(message)s", stream=sys.stderr)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
