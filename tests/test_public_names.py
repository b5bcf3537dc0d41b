"""asdx's top-level names: __all__ and dir() list the public API and the lazily imported subpackages."""

import subprocess
import sys
from pathlib import Path

import asdx

PUBLIC = {"__version__", "get_kernels", "get_num_threads", "info", "load_detector", "set_kernels",
          "set_num_threads"}


def test_all_lists_the_public_names_and_every_subpackage():
    assert set(asdx.__all__) == PUBLIC | set(asdx.SUBMODULES)
    assert "SUBMODULES" not in asdx.__all__
    assert {"scoring", "features", "systems", "detector", "data"} <= set(asdx.__all__)


def test_dir_shows_the_public_names_only():
    names = dir(asdx)
    assert names == sorted(asdx.__all__)
    for helper in ("PackageNotFoundError", "version", "SUBMODULES", "importlib"):
        assert helper not in names


def test_every_listed_name_resolves_and_import_stays_lazy():
    code = ("import sys, asdx\n"
            "assert not any(m.startswith('asdx.scoring') for m in sys.modules)\n"
            "dir(asdx)\n"
            "assert 'asdx.scoring' not in sys.modules  # listing loads nothing\n"
            "missing = [n for n in asdx.__all__ if getattr(asdx, n, None) is None]\n"
            "assert not missing, missing\n")
    subprocess.run([sys.executable, "-c", code], check=True)


# modules of the command line (cli, demo, report_tables, __main__) and `info`, which names the function asdx.info
NOT_LISTED = {"cli", "demo", "report_tables", "__main__", "info"}


def test_every_public_module_is_listed():
    """A new public module is reachable as asdx.<name> (SUBMODULES) unless it belongs to the command line."""
    root = Path(asdx.__file__).parent
    public = {p.stem for p in root.glob("*.py") if not p.stem.startswith("_")}
    public |= {p.parent.name for p in root.glob("*/__init__.py") if not p.parent.name.startswith("_")}
    assert public - NOT_LISTED == set(asdx.SUBMODULES)
