"""Run directories and their files: append-only JSONL and atomically written JSON.

Format changes (``SCHEMA_VERSION``; readers accept every older version):

- 2026-11-22, version 1: first format. ``manifest.json``, ``requests.jsonl`` (one row per
  request, see docs/run-directory.md), ``metrics/*.json``, ``engine-<arm>.log``.
- 2026-11-30, version 1 (additive): rows gain ``text_chars`` and ``text_truncated``; ``text``,
  ``reasoning`` and tool-call ``arguments`` are stored up to 262,144 characters each. Older rows
  lack both fields: read ``text_truncated`` as false.
- 2026-11-30, version 1 (changed meaning): an import's ``manifest.source.skipped.reasons`` is
  keyed by a fixed set of reasons (``not_a_number``, ``not_finite``, ``negative``, ``empty``,
  ``short_row``, ``long_row``, ``no_arm``, ``bad_value``) instead of ``"column X"``; older
  manifests keep their keys, which readers show as they are.
"""

SCHEMA_VERSION = 1
