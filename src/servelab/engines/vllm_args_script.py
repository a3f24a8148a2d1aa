"""Run by the Python of a vLLM install (not by servelab's): parse an argument list with the
installed vLLM's own API-server parser and print, as one JSON object, vLLM's version, every
option's resolved value (defaults included) and each option's spellings.

Usage: ``VLLM_PYTHON -I vllm_args_script.py ARG...`` (``-I``: this file's own directory holds
servelab's ``vllm.py``, which must not shadow the real package). An argument vLLM refuses
exits with its parser's message on stderr and status 2. Imports nothing from servelab.
"""

import argparse
import importlib
import json
import sys


def _parser() -> argparse.ArgumentParser:
    flexible = importlib.import_module("vllm.utils.argparse_utils").FlexibleArgumentParser
    try:
        cli_args = importlib.import_module("vllm.entrypoints.launchers.cli_args")
    except ImportError:  # vLLM before the launchers package
        cli_args = importlib.import_module("vllm.entrypoints.openai.cli_args")
    parser: argparse.ArgumentParser = cli_args.make_arg_parser(flexible())
    return parser


def main() -> None:
    version = str(importlib.import_module("vllm").__version__)
    parser = _parser()
    namespace = parser.parse_args(sys.argv[1:])
    options = {
        a.dest: list(a.option_strings)
        for a in parser._actions  # argparse keeps its actions here
        if a.option_strings and a.dest != "help"
    }
    print(json.dumps(
        {"version": version, "values": vars(namespace), "options": options},
        default=repr, sort_keys=True,
    ))  # fmt: skip


if __name__ == "__main__":
    main()
