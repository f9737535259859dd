"""Entry point of the init container (`python -m fetcher`, console script `modelcache-fetch`).

Exit 0 when the model is ready. Otherwise, a one-paragraph message goes to the termination log
(`kubectl describe pod` shows it) and stderr, and the exit code tells the kind of failure (see
modelcache/contract/errors.py and docs/fetcher.md).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from fetcher.config import FetchSettings, help_text
from fetcher.fetch import ensure_model, record_run
from modelcache.contract.errors import FetchError, StoppedError
from modelcache.contract.wire import TERMINATION_LOG_ENV, TERMINATION_LOG_PATH
from modelcache.runtime.logs import configure_logging
from modelcache.runtime.settings import answer_help

log = logging.getLogger("fetcher")
TERMINATION_LOG_LIMIT = 4096  # bytes the kubelet keeps of a termination message


def _stop(signum: int, _: FrameType | None) -> None:
    """SIGTERM (the pod is being deleted) or SIGINT: stop now, in the main thread, wherever it is."""
    raise StoppedError(
        f"stopped by {signal.Signals(signum).name}: the pod is being deleted or its init container restarted. "
        "What was downloaded stays staged and verified as far as it got; the next start resumes it, and "
        "pods waiting for this model took the lock over at once"
    )


def main(argv: list[str] | None = None) -> int:
    answered = answer_help(sys.argv[1:] if argv is None else argv, help_text, program="modelcache-fetch")
    if answered is not None:
        return answered
    # As PID 1 of its container the fetcher gets no default action for SIGTERM: without this handler it
    # would run on until the grace period ends in SIGKILL.
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        settings = FetchSettings.from_env(os.environ)
    except FetchError as err:
        configure_logging(fmt="text")
        code = _fail(err, Path(os.environ.get(TERMINATION_LOG_ENV, TERMINATION_LOG_PATH)))
        return _exit_now(code) if isinstance(err, StoppedError) else code
    configure_logging(fmt=settings.log_format, model_key=settings.key)
    for name in settings.ignored:
        log.warning("%s is not a setting of this fetcher image; ignored (is the image older than the webhook?)", name)
    return _run(settings)


def _run(settings: FetchSettings) -> int:
    started = time.monotonic()
    try:
        outcome = ensure_model(settings, environ=os.environ)
    except StoppedError as err:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the report below must not be cut short by a second one
        record_run(settings, None, err, time.monotonic() - started)
        return _exit_now(_fail(err, settings.termination_log))
    except FetchError as err:
        record_run(settings, None, err, time.monotonic() - started)
        return _fail(err, settings.termination_log)
    except Exception as err:  # a bug: still leave a message that says where to look
        log.exception("unexpected error")
        wrapped = FetchError(f"unexpected {type(err).__name__}: {err}; this is a bug, the log has the traceback")
        record_run(settings, None, wrapped, time.monotonic() - started)
        return _fail(wrapped, settings.termination_log)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # ready: what is left is writing it down, in milliseconds
    log.info("%s", outcome.summary())
    _write_termination_log(settings.termination_log, outcome.summary())
    record_run(settings, outcome, None, outcome.seconds)
    return 0


def _exit_now(code: int) -> int:
    """Exit at once: a download thread stuck in a read would hold an ordinary exit up."""
    logging.shutdown()
    os._exit(code)


def _fail(err: FetchError, termination_log: Path) -> int:
    message = f"modelcache fetcher: {err.reason}: {err}"
    log.error("%s (exit %d)", message, err.exit_code)
    _write_termination_log(termination_log, message)
    return err.exit_code


def _write_termination_log(path: Path, message: str) -> None:
    """Best effort: outside Kubernetes there may be no such file."""
    data = message.encode()[:TERMINATION_LOG_LIMIT]
    try:
        with path.open("wb") as out:
            out.write(data)
    except OSError:
        pass


if __name__ == "__main__":
    sys.exit(main())
