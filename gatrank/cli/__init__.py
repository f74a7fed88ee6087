"""``gatrank`` command line: train, eval, check-data, datasets, suite, notebooks, doctor,
verdict.

``parser`` (every command's arguments), ``train`` (the train command), ``commands`` (the
others), ``main`` (dispatch and the exit codes); each command imports the modules it runs when
it runs, so ``gatrank --help`` and a usage error answer without importing torch.
"""

from gatrank.cli.main import main
from gatrank.cli.parser import build_parser

__all__ = ["main", "build_parser"]
