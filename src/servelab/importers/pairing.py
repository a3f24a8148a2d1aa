"""Which arm each imported arm is compared with, and the refusal of undeclared differences.

Owns ``--references FILE[:CONFIG_COL:REF_COL]`` (a CSV naming each configuration's reference
arm, or a preset's companion file found next to the source), the pairs the analysis compares
(the rule of ``analysis.settings.Settings.candidates``: an arm that is others' reference without
one of its own is not a candidate), and the check that compared arms differ only where the
source's own pairing or ``--declare COLUMN`` says so. Reads the references file; writes nothing.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from servelab.errors import UsageError
from servelab.importers.common import sha256_file
from servelab.store.manifest import compared_pairs
from servelab.store.manifest_records import ReferencesFile, Scalar

REFERENCES_HELP = "--references FILE[:CONFIG_COL:REF_COL]"
DEFAULT_COLUMNS = ("config", "reference")


@dataclass(frozen=True, slots=True)
class ReferencesSpec:
    """A CSV whose ``config_column`` names a configuration and ``reference_column`` its
    reference arm (the arm it is compared with)."""

    path: Path
    config_column: str = DEFAULT_COLUMNS[0]
    reference_column: str = DEFAULT_COLUMNS[1]
    found_by_preset: bool = False

    @classmethod
    def parse(cls, text: str) -> ReferencesSpec:
        """``FILE`` (columns ``config`` and ``reference``) or ``FILE:CONFIG_COL:REF_COL``."""
        if not Path(text).exists() and text.count(":") >= 2:
            path, config, reference = text.rsplit(":", 2)
            if not (path and config.strip() and reference.strip()):
                raise UsageError(f"--references {text!r}: expected FILE[:CONFIG_COL:REF_COL]")
            spec = cls(Path(path), config.strip(), reference.strip())
        else:
            spec = cls(Path(text))
        if not spec.path.is_file():
            raise UsageError(
                f"--references {text!r}: no such file {spec.path}; give a CSV naming each "
                "configuration's reference arm, or --references none"
            )
        return spec

    def record(self) -> ReferencesFile:
        return ReferencesFile(
            path=str(self.path), sha256=sha256_file(self.path), config_column=self.config_column,
            reference_column=self.reference_column, found_by_preset=self.found_by_preset,
        )  # fmt: skip


Source = tuple[ReferencesSpec, dict[str, str]]
"""A references file and what it says (configuration -> reference)."""


@dataclass(frozen=True, slots=True)
class Pairing:
    """Each candidate's reference (from the source; the others' is the baseline), the columns
    the user declared, and per differing column how the comparisons treat it."""

    references: dict[str, str]
    declared: tuple[str, ...]
    how: dict[str, str]


def pair_arms(
    arms: Sequence[str], baseline: str, diff: Mapping[str, Mapping[str, Scalar]], *,
    declared: Sequence[str], columns: set[str], source: Source | None,
) -> Pairing:  # fmt: skip
    """Pair the imported arms and refuse undeclared differences (one-line ``UsageError``).
    ``diff`` is ``checks.config_diff``; ``columns`` every source column (for ``--declare``);
    ``source`` the references file and what it says."""
    declared = tuple(dict.fromkeys(declared))
    for column in declared:
        if column not in columns:
            known = ", ".join(sorted(columns)) or "(none)"
            raise UsageError(f"--declare {column}: the source has no such column; columns: {known}")
    references = arm_references(source[1], arms, source[0]) if source else {}
    found = differences(compared_pairs(arms, baseline, references), diff)
    refuse_undeclared(found, declared, references)
    how = {column: difference_words(column, found, declared, references) for column in diff}
    return Pairing(references, declared, how)


def find_references(
    option: str | None, companion: tuple[str, str, str] | None, source: Path
) -> ReferencesSpec | None:
    """The references to use: ``option`` (``none`` turns them off), else the preset's
    companion file ``(file name, config column, reference column)`` when it lies next to
    ``source``."""
    if option is not None and option.strip().lower() == "none":
        return None
    if option:
        return ReferencesSpec.parse(option)
    if companion is None:
        return None
    name, config, reference = companion
    path = source.parent / name
    return ReferencesSpec(path, config, reference, found_by_preset=True) if path.is_file() else None


def read_references(spec: ReferencesSpec) -> dict[str, str]:
    """Configuration -> reference, as the file has them (an arm may be its own reference).
    Rows with an empty cell are skipped; a missing column or two references for one
    configuration is a one-line ``UsageError``."""
    flag = f"--references {spec.path}"
    try:
        return _read_table(spec, flag)
    except UnicodeDecodeError as exc:
        raise UsageError(f"{flag}: not UTF-8 text ({exc.reason}); convert it first") from exc


def _read_table(spec: ReferencesSpec, flag: str) -> dict[str, str]:
    with spec.path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        header = list(reader.fieldnames or ())
        for column in (spec.config_column, spec.reference_column):
            if column not in header:
                raise UsageError(
                    f"{flag}: no column {column!r}; columns: {', '.join(header) or '(none)'}; "
                    f"name the columns with {REFERENCES_HELP}"
                )
        table: dict[str, str] = {}
        for row in reader:
            config = (row.get(spec.config_column) or "").strip()
            reference = (row.get(spec.reference_column) or "").strip()
            if not config or not reference:
                continue
            if table.setdefault(config, reference) != reference:
                raise UsageError(
                    f"{flag}: {config!r} has two references ({table[config]!r} and "
                    f"{reference!r}, line {reader.line_num}); keep one"
                )
    if not table:
        raise UsageError(f"{flag}: no configuration with a reference in it")
    return table


def arm_references(
    table: Mapping[str, str], arms: Sequence[str], spec: ReferencesSpec
) -> dict[str, str]:
    """Imported candidate -> imported reference (arms that are their own reference left out).
    Configurations the file lists but the import lacks are ignored; a reference that was not
    imported, or a file that names no imported arm, is a one-line ``UsageError``."""
    flag = f"--references {spec.path}"
    named = [arm for arm in arms if arm in table]
    if not named:
        raise UsageError(
            f"{flag}: its column {spec.config_column!r} names none of the imported arms "
            f"({', '.join(arms[:5])}{' ...' if len(arms) > 5 else ''}); give the file that "
            "belongs to these rows, or --references none"
        )
    out: dict[str, str] = {}
    for arm in named:
        reference = table[arm]
        if reference == arm:
            continue
        if reference not in arms:
            raise UsageError(
                f"{flag}: arm {arm!r} is compared with {reference!r}, which is not among the "
                "imported arms; import its rows too, or give --references none"
            )
        out[arm] = reference
    return out


@dataclass(frozen=True, slots=True)
class Difference:
    """A column constant within two compared arms whose values differ."""

    reference: str
    candidate: str
    column: str
    reference_value: Scalar
    candidate_value: Scalar


def differences(
    pairs: Sequence[tuple[str, str]], diff: Mapping[str, Mapping[str, Scalar]]
) -> list[Difference]:
    """Every (pair, column) of ``diff`` (``checks.config_diff``: columns constant within the
    arms it lists) constant in both arms with two different values."""
    out = []
    for reference, candidate in pairs:
        for column, values in diff.items():
            if reference not in values or candidate not in values:
                continue  # not constant within one of the two: no setting to tell apart
            a, b = values[reference], values[candidate]
            if json.dumps(a) != json.dumps(b):
                out.append(Difference(reference, candidate, column, a, b))
    return out


def refuse_undeclared(
    found: Sequence[Difference], declared: Sequence[str], references: Mapping[str, str]
) -> None:
    """A one-line ``UsageError`` (exit 2) for the first difference that neither the source's
    pairing (the candidate has a reference from the source) nor ``--declare`` accounts for."""
    undeclared = [
        d for d in found if d.column not in declared and references.get(d.candidate) is None
    ]
    if not undeclared:
        return
    first = undeclared[0]
    columns = list(dict.fromkeys(d.column for d in undeclared))
    pairs = {(d.reference, d.candidate) for d in undeclared}
    more = f"; {len(pairs)} compared pairs differ so" if len(pairs) > 1 else ""
    fix = " ".join(f"--declare {c}" for c in columns)
    raise UsageError(
        f"compared arms {first.reference!r} and {first.candidate!r} differ in column "
        f"{first.column} ({first.reference}: {first.reference_value}, {first.candidate}: "
        f"{first.candidate_value}), constant within each arm: the verdict would mix that "
        f"difference in{more}. Declare it ({fix}) or name each "
        f"configuration's reference ({REFERENCES_HELP})"
    )


def difference_words(
    column: str, found: Sequence[Difference], declared: Sequence[str],
    references: Mapping[str, str],
) -> str:  # fmt: skip
    """How the comparisons treat a column that differs between arms (for its note)."""
    pairs = [f"{d.candidate} vs {d.reference}" for d in found if d.column == column]
    if not pairs:
        return "no compared pair differs in it"
    shown = ", ".join(pairs[:4]) + (" ..." if len(pairs) > 4 else "")
    if column in declared:
        return f"declared with --declare {column} ({shown})"
    return f"compared across it as the source pairs them ({shown})"
