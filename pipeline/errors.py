"""The one base class of expected failures: what went wrong and how to fix it, shown as one line."""

from __future__ import annotations


class PipelineError(ValueError):
    """An expected failure the user can fix; entry points print it as ``error: <what> — <fix>``.

    The message itself carries both parts (``"<what> — <fix>"``); no traceback is shown unless the
    user asks for one (HYDRA_FULL_ERROR=1).
    """
