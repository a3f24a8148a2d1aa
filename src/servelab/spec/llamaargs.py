"""llama.cpp's command line, read from the binary's own ``--help``: aliases, values, defaults.

Owns turning an argument list into ``{canonical option: value}`` with every option the binary
knows made explicit (its documented default when not given), so two arms' configurations can be
compared field by field whatever spelling (``-t 2``, ``--threads 2``, ``--threads=2``) or order
the user wrote. Pure: the help text comes in as a string.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_DEFAULT = re.compile(r"\(default:\s*([^()]*?)\)")
_DEFAULT_LOOSE = re.compile(r"default:\s*([^,;)]+)")
_DESC_COL = 40  # llama.cpp prints the description from this column when the aliases fit

NOT_GIVEN = "(default)"


@dataclass(frozen=True, slots=True)
class Option:
    name: str  # canonical: the first non-negated long alias, without dashes
    aliases: tuple[str, ...]
    negations: tuple[str, ...]
    takes_value: bool
    default: str


@dataclass(frozen=True, slots=True)
class OptionTable:
    options: tuple[Option, ...]

    def lookup(self) -> dict[str, tuple[Option, bool]]:
        """alias -> (option, value for a boolean alias: False for a negation)."""
        table: dict[str, tuple[Option, bool]] = {}
        for opt in self.options:
            for alias in opt.aliases:
                table.setdefault(alias, (opt, True))
            for alias in opt.negations:
                table.setdefault(alias, (opt, False))
        return table

    def canonical(self, flag: str) -> str | None:
        found = self.lookup().get(flag.split("=", 1)[0])
        return found[0].name if found else None


def _is_negation(alias: str) -> bool:
    return alias.startswith(("--no-", "-no")) and alias not in ("-n",)


def _parse_head(head: str) -> tuple[list[str], bool]:
    parts = [p.strip() for p in head.split(", ") if p.strip()]
    aliases: list[str] = []
    takes_value = False
    for part in parts:
        word, _, rest = part.partition(" ")
        if not word.startswith("-"):
            takes_value = True  # a placeholder split on ", " (rare)
            continue
        aliases.append(word)
        if rest.strip():
            takes_value = True
    return aliases, takes_value


def parse_help(text: str) -> OptionTable:
    """Read ``llama-server --help`` into an option table (section headers are skipped)."""
    entries: list[tuple[list[str], bool, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("-----"):
            continue
        if line.startswith("-"):
            if len(line) > _DESC_COL and line[_DESC_COL - 1] == " " and line[_DESC_COL] != " ":
                head, desc = line[:_DESC_COL], line[_DESC_COL:]
            else:
                head, desc = line, ""
            aliases, takes_value = _parse_head(head.rstrip())
            entries.append((aliases, takes_value, [desc.strip()]))
        elif line.startswith(" ") and entries:
            entries[-1][2].append(line.strip())
    options = []
    for aliases, takes_value, desc_lines in entries:
        positive = [a for a in aliases if not _is_negation(a)] or aliases
        negations = [a for a in aliases if _is_negation(a) and a not in positive]
        longs = [a for a in positive if a.startswith("--")]
        name = (longs[0] if longs else positive[0]).lstrip("-")
        desc = " ".join(desc_lines)
        m = _DEFAULT.search(desc) or _DEFAULT_LOOSE.search(desc)
        default = m.group(1).strip().strip("'\"") if m else NOT_GIVEN
        options.append(
            Option(name, tuple(positive), tuple(negations), takes_value and not negations, default)
        )
    return OptionTable(tuple(options))


@dataclass(frozen=True, slots=True)
class Canonical:
    values: dict[str, str]  # every known option: given value, or its default
    given: dict[str, str]  # only the options present in the argument list
    unknown: tuple[str, ...]  # arguments the binary does not list


def canonicalize(argv: list[str] | tuple[str, ...], table: OptionTable) -> Canonical:
    """Options of an argument list (program name excluded), later occurrences winning."""
    lookup = table.lookup()
    given: dict[str, str] = {}
    unknown: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        flag, eq, inline = token.partition("=")
        found = lookup.get(flag) if token.startswith("-") else None
        if found is None:
            unknown.append(token)
            i += 1
            continue
        opt, positive = found
        if opt.takes_value:
            if eq:
                given[opt.name] = inline
                i += 1
            else:
                given[opt.name] = argv[i + 1] if i + 1 < len(argv) else ""
                i += 2
        else:
            given[opt.name] = "true" if positive else "false"
            i += 1
    values = {opt.name: opt.default for opt in table.options}
    values.update(given)
    return Canonical(values=values, given=given, unknown=tuple(unknown))
