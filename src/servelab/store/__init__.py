"""Run directories and their files: append-only JSONL and atomically written JSON.

Format changes (``SCHEMA_VERSION``; readers accept every older version):

- 2026-11-22, version 1: first format. ``manifest.json``, ``requests.jsonl`` (one row per
  request, see docs/run-directory.md), ``metrics/*.json``, ``engine-<arm>.log``.
"""

SCHEMA_VERSION = 1
