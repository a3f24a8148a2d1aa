"""The servelab exception tree: every error servelab raises on purpose.

Owns the one root class and its kinds. The CLI turns any ``ServelabError`` into a one-line
message and the exit code of its kind; anything else is a bug and keeps its traceback (exit 1,
the code Python gives an uncaught exception). Messages say what failed and what to do about it.
docs/errors.md lists every exit code and what servelab does under each fault.

    ServelabError                   (exit 1)  raised as itself only by `verify`: a regression
    ├── UsageError                  (exit 2)  bad input: a flag, a spec, a workload file
    │   ├── WorkloadError                     a workload file that breaks the schema
    │   └── ModelNotFoundError                a model name or path that resolves to nothing
    ├── EnvironmentProblem          (exit 3)  the machine is not ready: port taken, tool missing
    │   └── EngineNotInstalledError           no engine binary for the requested kind
    ├── BuildError                  (exit 4)  an engine build failed (names the log)
    ├── DownloadError               (exit 4)  a model or source download failed
    ├── EngineError                 (exit 5)  an engine process misbehaved
    │   ├── EngineStartError                  it died or never became healthy
    │   └── EngineCrashedError                it died while servelab was measuring
    ├── StoreError                  (exit 6)  a run directory that cannot be read or written
    ├── GatesFailed                 (exit 7)  a required arm failed a quality or speed gate
    ├── RequestsFailed              (exit 8)  an arm had no successful trial request, or more
    │                                         failed than max_failure_rate; results are kept
    └── Interrupted               (exit 130)  Ctrl-C or SIGTERM; says where the results so far are
"""

from __future__ import annotations


class ServelabError(Exception):
    """Root of every error servelab raises on purpose."""

    exit_code: int = 1


class UsageError(ServelabError):
    """The user's input is wrong; the message names the bad part and the fix."""

    exit_code = 2


class WorkloadError(UsageError):
    """A workload file does not match the workload schema."""


class ModelNotFoundError(UsageError):
    """A model name is not known and is not a path to a GGUF file."""


class EnvironmentProblem(ServelabError):
    """The machine is not in a state servelab can use (port taken, tool missing)."""

    exit_code = 3


class EngineNotInstalledError(EnvironmentProblem):
    """No binary is installed for an engine kind."""


class BuildError(ServelabError):
    """Building an engine from source failed."""

    exit_code = 4


class DownloadError(ServelabError):
    """Fetching a package, source or model failed."""

    exit_code = 4


class EngineError(ServelabError):
    """An engine process misbehaved."""

    exit_code = 5


class EngineStartError(EngineError):
    """The engine exited or never answered its health check during start."""


class EngineCrashedError(EngineError):
    """The engine died while requests were being measured."""


class StoreError(ServelabError):
    """A run directory or one of its files cannot be read or written."""

    exit_code = 6


class GatesFailed(ServelabError):
    """The baseline or a required arm failed a quality or speed gate; the report says which."""

    exit_code = 7


class RequestsFailed(ServelabError):
    """Too many measured requests failed: an arm with no successful trial request, or a
    failure rate above the run's ``max_failure_rate``. The run directory and its report are
    complete; the message names the arm and where the errors are."""

    exit_code = 8


class Interrupted(ServelabError):
    """The user interrupted a run; what was recorded before is kept."""

    exit_code = 130
