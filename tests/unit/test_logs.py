"""server.logs: failures logged by type and frames, never with their text above DEBUG; and the
decoders that refuse lone surrogates before they reach the model (or a log)."""

from __future__ import annotations

import asyncio
import io
import logging

import pytest

from server.errors import ChinwagError, ErrorCode
from server.logs import RedactFailures, describe_failure, log_failure, loop_exception_handler
from server.protocol import mqtt as wire
from server.protocol import native as proto
from server.protocol import realtime as rt

SECRET = "the secret prompt"


def fail_with_cause() -> None:
    try:
        SECRET.encode("ascii", "strict") + "\ud800".encode()
    except UnicodeEncodeError as exc:
        raise RuntimeError(f"could not evaluate {SECRET!r}") from exc


def caught() -> BaseException:
    try:
        fail_with_cause()
    except RuntimeError as exc:
        return exc
    raise AssertionError("no exception")


def test_describe_failure_keeps_types_and_frames_drops_messages() -> None:
    text = describe_failure(caught())
    assert SECRET not in text and "surrogate" not in text
    assert "UnicodeEncodeError" in text and "RuntimeError" in text
    assert "fail_with_cause" in text and "test_logs.py" in text
    # Causes first, as Python prints them.
    assert (
        text.index("UnicodeEncodeError") < text.index("direct cause") < text.index("RuntimeError")
    )


def test_describe_failure_of_a_context_and_of_an_exception_without_traceback() -> None:
    try:
        try:
            raise KeyError(SECRET)
        except KeyError:
            raise ValueError(SECRET) from None
    except ValueError as exc:
        text = describe_failure(exc)
    assert "KeyError" not in text and SECRET not in text  # the context was suppressed
    assert describe_failure(ChinwagError(ErrorCode.INTERNAL_ERROR, SECRET)).endswith(
        "server.errors.ChinwagError"
    )


def test_log_failure_error_without_text_debug_with_everything(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("test.logs")
    caplog.set_level(logging.DEBUG, logger="test.logs")
    log_failure(logger, "reply %s failed", caught(), "r1")
    error, debug = caplog.records
    assert error.levelno == logging.ERROR and error.exc_info is None
    assert error.getMessage().startswith("reply r1 failed: RuntimeError\n")
    assert SECRET not in error.getMessage()
    assert debug.levelno == logging.DEBUG and debug.exc_info is not None
    assert SECRET in logging.Formatter().format(debug)
    caplog.clear()
    caplog.set_level(logging.INFO, logger="test.logs")
    log_failure(logger, "reply %s failed", caught(), "r2")
    assert [r.levelno for r in caplog.records] == [logging.ERROR]


def test_redact_filter_on_a_handler() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactFailures())
    logger = logging.getLogger("test.logs.redact")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        try:
            fail_with_cause()
        except RuntimeError:
            logger.exception("a library's handler failed")
            logger.debug("at debug", exc_info=True)
    finally:
        logger.removeHandler(handler)
    error_part, _, debug_part = stream.getvalue().partition("at debug")
    assert "a library's handler failed" in error_part and "RuntimeError" in error_part
    assert SECRET not in error_part
    assert SECRET in debug_part


def test_loop_exception_handler(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="asyncio")
    loop = asyncio.new_event_loop()
    try:
        future = loop.create_future()
        exc = caught()
        future.set_exception(exc)
        context = {"message": "Future exception was never retrieved", "exception": exc}
        loop_exception_handler(loop, {**context, "future": future})
        loop_exception_handler(loop, {"message": "something odd"})
        future.exception()
    finally:
        loop.close()
    above_debug = [r for r in caplog.records if r.levelno > logging.DEBUG]
    assert [r.getMessage().splitlines()[0] for r in above_debug] == [
        "Future exception was never retrieved: RuntimeError",
        "something odd",
    ]
    assert all(SECRET not in r.getMessage() for r in above_debug)


LONE = '{"type": "user.message", "text": "hi \\ud800"}'


def test_native_refuses_a_lone_surrogate() -> None:
    frames = (
        LONE,
        '{"type": "say", "text": "x", "\\udfff": 1}',
        '{"type": "say", "text": ["\\ud83d"]}',
    )
    for frame in frames:
        with pytest.raises(ChinwagError) as info:
            proto.decode_client_message(frame, 100)
        assert info.value.code == ErrorCode.INVALID_JSON and "surrogate" in info.value.message
    # A surrogate pair is one character; an escaped backslash before "ud800" is plain text.
    pair = proto.decode_client_message('{"type": "user.message", "text": "\\ud83d\\ude00"}', 100)
    assert isinstance(pair, proto.UserMessage) and pair.text == "\U0001f600"
    plain = proto.decode_client_message('{"type": "user.message", "text": "\\\\ud800"}', 100)
    assert isinstance(plain, proto.UserMessage) and plain.text == "\\ud800"


def test_realtime_and_mqtt_refuse_a_lone_surrogate() -> None:
    with pytest.raises(rt.RealtimeError) as info:
        rt.decode_client_event('{"type": "conversation.item.create", "x": "\\udbff"}')
    assert info.value.code == "invalid_json"
    with pytest.raises(ChinwagError) as mqtt_info:
        wire.json_object(LONE.encode())
    assert mqtt_info.value.code == ErrorCode.INVALID_JSON
