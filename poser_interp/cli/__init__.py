"""The `poser-interp` command line, one module per command group (`poser-interp --help` lists them)."""

from .commands import app as app
from .commands import main as main
