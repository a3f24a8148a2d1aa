"""The ``servelab`` command line: thin commands over library functions."""
