"""``python -m servelab``: the same as the ``servelab`` command."""

from servelab.cli.main import entry

entry()
