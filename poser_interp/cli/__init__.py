"""The `poser-interp` command line, one module per command group (`poser-interp --help` lists them).

`common` holds the app and what every command shares; importing each group registers its commands, in the order
`--help` lists them.
"""

# isort: off
from .common import app as app
from .common import main as main
from . import model as model  # info, score, generate
from . import testbed as testbed  # testbed build, testbed verify
from . import detect as detect  # detect, strategies
from . import report as report  # report
from . import suite as suite  # remove, suite
from . import external as external  # testbed from-models, audit
# isort: on
