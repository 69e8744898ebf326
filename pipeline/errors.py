"""The one base class of expected failures: what went wrong and how to fix it, shown as one line."""

from __future__ import annotations

import argparse
import contextlib
import zipfile
from collections.abc import Iterator
from typing import NoReturn


class PipelineError(ValueError):
    """An expected failure the user can fix; entry points print it as ``error: <what> — <fix>``.

    The message itself carries both parts (``"<what> — <fix>"``); no traceback is shown unless the
    user asks for one (HYDRA_FULL_ERROR=1).
    """


class InputMissingError(PipelineError, FileNotFoundError):
    """A file or folder the run reads does not exist (still a FileNotFoundError for callers that catch one)."""


class InputFileError(PipelineError):
    """A file the run reads exists but cannot be decoded (corrupt, truncated, wrong format); names it."""


class NonFiniteError(PipelineError):
    """A computed number is NaN or infinite where the paper's quantity is finite; names the seed and step."""


def first_line(text: object, limit: int = 200) -> str:
    """The first line of an error message, whitespace-collapsed and capped (for one-line reports)."""
    line = " ".join(str(text).split("\n", 1)[0].split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


@contextlib.contextmanager
def reading(path: object, fix: str) -> Iterator[None]:
    """Turn a failure to read or decode ``path`` into one line naming it: ``<path> ... — <fix>``.

    Errors that already explain themselves (PipelineError) pass through unchanged.
    """
    try:
        yield
    except PipelineError:
        raise
    except FileNotFoundError as exc:
        raise InputMissingError(f"{path} does not exist — {fix}") from exc
    except IsADirectoryError as exc:
        raise InputFileError(f"{path} is a folder where a file is expected — {fix}") from exc
    except PermissionError as exc:
        raise InputFileError(f"{path} cannot be read (permission denied) — make it readable") from exc
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
        raise InputFileError(
            f"{path} is corrupt or not in the expected format ({type(exc).__name__}: {first_line(exc)}) — {fix}"
        ) from exc


class ConfigError(PipelineError):
    """A configuration that cannot produce a valid run; raised before any work starts."""


class SettingError(PipelineError):
    """A configured value outside what a computation accepts (still a ValueError for older callers)."""


class CommandLineParser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are one line, ``error: <what> — see `<prog> --help```, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {first_line(message)} — see `{self.prog} --help`\n")
