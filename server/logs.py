"""Logging failures without the conversation.

An exception's message and arguments may quote what a person said or the whole prompt (a
UnicodeEncodeError carries the string it failed on), so above DEBUG the log gets only the
exception's type and where it happened; the full exception is logged at DEBUG.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from typing import Any

Logger = logging.Logger | logging.LoggerAdapter[Any]


def describe_failure(exc: BaseException) -> str:
    """A traceback without messages: each exception's qualified type and its frames (file,
    line, function and source line), causes first as Python prints them."""
    chain: list[tuple[BaseException, str]] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    link = ""
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append((current, link))
        if current.__cause__ is not None:
            current, link = current.__cause__, "The above exception was the direct cause of:"
        elif current.__context__ is not None and not current.__suppress_context__:
            current, link = current.__context__, "During handling of the above exception:"
        else:
            current = None
    lines: list[str] = []
    for index, (item, _) in enumerate(reversed(chain)):
        if index:
            # The link stored with the exception after this one names how they are chained.
            lines.append(chain[len(chain) - index][1])
        lines.append("Traceback (most recent call last; message withheld):")
        frames = traceback.extract_tb(item.__traceback__)
        lines.extend(line.rstrip("\n") for line in traceback.format_list(frames))
        lines.append(_type_name(item))
    return "\n".join(lines)


def _type_name(exc: BaseException) -> str:
    kind = type(exc)
    if kind.__module__ in ("builtins", "__main__"):
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


def log_failure(logger: Logger, what: str, exc: BaseException, *args: object) -> None:
    """Log an unexpected exception: its type and traceback at ERROR, everything at DEBUG.

    `what` and `args` are a %-format for the log message: pass ids, never conversation text.
    """
    logger.error(what + ": %s\n%s", *args, _type_name(exc), describe_failure(exc))
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug(what + ": full detail", *args, exc_info=exc)


class RedactFailures(logging.Filter):
    """A handler filter, the net under the call sites: a record above DEBUG that carries an
    exception (a library's `logger.exception`) shows the exception's type and frames only."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.DEBUG and record.exc_info and record.exc_info[1]:
            record.exc_text = describe_failure(record.exc_info[1])
        return True


def redact_handlers(logger: logging.Logger | None = None) -> None:
    """Put RedactFailures on every handler of `logger` (the root logger by default)."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RedactFailures) for f in handler.filters):
            handler.addFilter(RedactFailures())


def loop_exception_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """For loop.set_exception_handler: asyncio's default one logs the failed task or future's
    repr ("Future exception was never retrieved ... exception=UnicodeEncodeError('utf-8',
    '<the prompt>' ...)"); this one logs the message and the exception without its text."""
    message = str(context.get("message") or "unhandled exception in the event loop")
    exc = context.get("exception")
    if isinstance(exc, BaseException):
        log_failure(_asyncio_log, "%s", exc, message)
    else:
        _asyncio_log.error("%s", message)


_asyncio_log = logging.getLogger("asyncio")
