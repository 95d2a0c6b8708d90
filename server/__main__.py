"""The `chinwag` command: serve, chat, models."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from server import logs
from server.config import ConfigError, Settings, load_settings, settings_as_toml
from server.config_errors import settings_problem
from server.errors import ChinwagException

if TYPE_CHECKING:
    from server.app import App
    from server.prompts import PersonaLibrary

log = logging.getLogger("chinwag")
# On SIGTERM, how long turns in progress get to send their closing events (and MQTT its
# last replies) before connections close.
SHUTDOWN_GRACE_S = 3.0

MODELS_DIR_HELP = (
    "folder of the default model weights (default: models/ of a checkout, else "
    "$XDG_DATA_HOME/chinwag/models)"
)


def _serve_overrides(args: argparse.Namespace) -> dict[str, Any]:
    server: dict[str, Any] = {}
    if args.host is not None:
        server["host"] = args.host
    if args.port is not None:
        server["port"] = args.port
    if args.token is not None:
        server["token"] = args.token
    overrides: dict[str, Any] = {"server": server} if server else {}
    if args.mqtt is not None:
        overrides["mqtt"] = {"url": args.mqtt}
    if args.wyoming is not None:
        overrides["wyoming"] = {"uri": args.wyoming}
    if args.model is not None:
        overrides["llm"] = {"model_path": str(Path(args.model).resolve())}
    for stage in ("llm", "asr", "tts"):
        url = getattr(args, f"{stage}_url")
        if url is not None:  # a remote stage (docs/scaling.md, "Remote engines")
            overrides.setdefault(stage, {}).update(backend="openai", base_url=url)
    return overrides | _models_dir_override(args)


def _models_dir_override(args: argparse.Namespace) -> dict[str, Any]:
    if args.models_dir is None:
        return {}
    return {"models": {"directory": str(args.models_dir.resolve())}}


class StartupError(ChinwagException):
    """Why the server cannot start: one line for the person who started it, naming the
    setting to change."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _prepare_default_knowledge(personas: PersonaLibrary) -> None:
    """Embed the default persona's facts beside the first turns (about a second of CPU), so its
    first site question does not wait for it; other personas' facts are embedded on their
    first question. The thread ends by itself."""
    knowledge = personas.get(None).knowledge
    if knowledge is not None and knowledge.encoder is not None:
        threading.Thread(target=knowledge.prepare, name="knowledge", daemon=True).start()


def _load_personas(settings: Settings) -> PersonaLibrary:
    """The persona library, or a StartupError naming the [prompts] setting that is wrong."""
    from server.prompts import PersonaFileError, PersonaLibrary

    prompts = settings.prompts
    try:
        return PersonaLibrary.load(
            prompts.directory, prompts.default_persona, settings.models.directory
        )
    except PersonaFileError as exc:
        files = sorted(prompts.directory.glob("*.toml")) if prompts.directory.is_dir() else []
        if not prompts.directory.is_dir():
            problem = f"[prompts] directory {prompts.directory}: no such folder"
        elif not files:
            problem = f"[prompts] directory {prompts.directory}: no persona files (*.toml) in it"
        elif not (prompts.directory / f"{prompts.default_persona}.toml").is_file():
            names = ", ".join(f.stem for f in files)
            problem = (
                f"[prompts] default_persona {prompts.default_persona!r}: no such persona in "
                f"{prompts.directory} (there are: {names})"
            )
        else:
            problem = f"[prompts] directory {prompts.directory}: {_one_line(exc)}"
        raise StartupError(problem, exit_code=2) from exc


def _one_line(exc: BaseException) -> str:
    """An exception's message on one line; a pydantic error as 'field: problem; ...'."""
    from pydantic import ValidationError

    text = str(exc)
    cause = exc.__cause__
    if isinstance(cause, ValidationError):
        head = text.split(": ", 1)[0]
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in cause.errors(include_url=False)
        )
        return f"{head}: {problems}"
    return " ".join(text.split())


async def _listen(
    settings: tuple[str, str], host: str, port: int, start: Callable[[str, int], Awaitable[None]]
) -> None:
    """Start a listener; a StartupError naming the setting (of the host, of the port) to
    change when the address cannot be used."""
    host_setting, port_setting = settings
    try:
        await start(host, port)
    except socket.gaierror as exc:
        raise StartupError(
            f"{host_setting} {host!r}: the name does not resolve to an address ({exc.strerror})"
        ) from exc
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        setting, hint = {
            errno.EADDRINUSE: (
                port_setting,
                "another program (or another chinwag) is listening there; choose another port",
            ),
            errno.EADDRNOTAVAIL: (host_setting, "that address is not one of this machine's"),
            errno.EACCES: (port_setting, "ports below 1024 need privileges"),
        }.get(exc.errno or 0, (f"{host_setting}, {port_setting}", ""))
        more = f"; {hint}" if hint else ""
        raise StartupError(f"{setting}: cannot listen on {host}:{port}: {reason}{more}") from exc


async def serve(settings: Settings, ready_file: Path | None = None) -> None:
    from server.app import App, load_into
    from server.transports.websocket import WebSocketServer

    # The model's worker thread holds the GIL between tokens; with Python's default 5 ms switch
    # interval the event loop could wait that long to send a token out. 1 ms brought the text
    # time to first token from 1.08-1.17 to 1.02-1.09 times the direct call (docs/performance.md).
    sys.setswitchinterval(0.001)
    asyncio.get_running_loop().set_exception_handler(logs.loop_exception_handler)
    personas = _load_personas(settings)
    app = App(settings=settings, personas=personas)
    web = WebSocketServer(app)
    addresses = ("[server] host", "[server] port")
    await _listen(addresses, settings.server.host, settings.server.port, web.start)
    log.info("chinwag listening on http://%s:%d (models loading)", settings.server.host, web.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    bridge: asyncio.Task[None] | None = None
    mqtt = None
    if settings.mqtt.url:
        from server.transports.mqtt import MqttBridge

        # Runs (and reconnects) on its own; a broker that is down does not stop the server.
        mqtt = MqttBridge(app, settings.mqtt)
        bridge = asyncio.create_task(mqtt.run(), name="mqtt")
    wyoming = None
    if settings.wyoming.uri:
        from server.protocol.wyoming import parse_tcp_uri
        from server.transports.wyoming import WyomingServer

        # Home Assistant's speech services and conversation agent; `describe` is answered
        # while the models load.
        wyoming = WyomingServer(app, settings.wyoming)
        try:
            uri = ("[wyoming] uri", "[wyoming] uri")
            await _listen(uri, *parse_tcp_uri(settings.wyoming.uri), wyoming.start)
        except StartupError:
            await web.close()
            raise
    satellites = None
    if settings.wyoming.satellites:
        from server.transports.wyoming_satellite import WyomingSatellites

        # Connects out to each wyoming-satellite and keeps reconnecting (docs/satellites.md).
        satellites = WyomingSatellites(app, settings.wyoming)
        satellites.start()
    try:
        loading = asyncio.create_task(load_into(app))
        done, _ = await asyncio.wait(
            {loading, asyncio.create_task(stop.wait())}, return_when=asyncio.FIRST_COMPLETED
        )
        if loading in done and loading.exception() is None:
            log.info("ready: ws://%s:%d/", settings.server.host, web.port)
            _prepare_default_knowledge(personas)
            if ready_file is not None:
                await asyncio.to_thread(ready_file.write_text, str(web.port))
            await stop.wait()
        elif loading in done:
            raise SystemExit(f"chinwag: could not load the models: {app.load_error}")
    finally:
        # Every turn ends with a status the client sees (`reply.done` cancelled, the MQTT
        # site's last /reply), then connections close with 1001; at most SHUTDOWN_GRACE_S.
        log.info("shutting down: ending %d session(s)' turns", app.hub.count)
        await end_turns(app, SHUTDOWN_GRACE_S)
        if bridge is not None:
            if mqtt is not None:
                await mqtt.drain(SHUTDOWN_GRACE_S)
            bridge.cancel()
            await asyncio.gather(bridge, return_exceptions=True)
        if satellites is not None:
            await satellites.close()
        if wyoming is not None:
            await wyoming.close()
        await web.close()
        app.close()


async def end_turns(app: App, grace_s: float) -> None:
    """Cancel every session's turn in progress and wait (at most grace_s) until its closing
    events are out."""
    sessions = list(app.hub)
    if not sessions:
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(grace_s):
            await asyncio.gather(*(s.cancel_turn() for s in sessions), return_exceptions=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chinwag", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p_serve = sub.add_parser("serve", help="run the server")
    p_serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    p_serve.add_argument("--port", type=int, help="port (default 8765; 0 picks a free one)")
    p_serve.add_argument("--config", type=Path, help="TOML config file")
    p_serve.add_argument("--model", help="path to a GGUF chat model to use instead")
    p_serve.add_argument("--models-dir", type=Path, help=MODELS_DIR_HELP)
    for stage, what in (("llm", "the chat model"), ("asr", "speech to text"),
                        ("tts", "text to speech")):  # fmt: skip
        p_serve.add_argument(
            f"--{stage}-url",
            metavar="URL",
            help=f"{what} on this OpenAI-compatible server (http://HOST:PORT/v1); "
            f'sets [{stage}] backend = "openai" and base_url',
        )
    p_serve.add_argument("--token", help="require this token from clients")
    p_serve.add_argument("--mqtt", metavar="URL", help="join this MQTT broker (mqtt://HOST:PORT)")
    p_serve.add_argument(
        "--wyoming", metavar="URI", help="serve Home Assistant's Wyoming protocol (tcp://HOST:PORT)"
    )
    p_serve.add_argument("--print-config", action="store_true", help="print settings and exit")
    p_serve.add_argument("--ready-file", type=Path, help="write the port here once ready")

    p_chat = sub.add_parser("chat", help="chat with a running server")
    p_chat.add_argument("--url", default="ws://127.0.0.1:8765/", help="server WebSocket URL")
    p_chat.add_argument("--persona", help="persona name (see prompts/)")
    p_chat.add_argument("--token", help="token, if the server requires one")
    p_chat.add_argument("text", nargs="?", help="ask this once and exit; omit for a chat")

    p_talk = sub.add_parser("talk", help="speak an audio file to a running server, hear the reply")
    p_talk.add_argument("--url", default="ws://127.0.0.1:8765/", help="server WebSocket URL")
    p_talk.add_argument("--out", type=Path, help="write the reply audio to this WAV file")
    p_talk.add_argument("--json", action="store_true", help="print one JSON object")
    p_talk.add_argument("--token", help="token, if the server requires one")
    p_talk.add_argument(
        "wav", type=Path, help="an audio file: WAV, FLAC, MP3, Ogg Vorbis or Opus, M4A..."
    )

    p_sat = sub.add_parser(
        "satellite",
        help="an always-listening satellite: microphone in, speaker out (docs/satellites.md)",
    )
    p_sat.add_argument("--url", default="ws://127.0.0.1:8765/", help="server WebSocket URL")
    p_sat.add_argument("--name", default=socket.gethostname(), help="site name (the host's)")
    p_sat.add_argument("--wake-word", help="answer only after this wake word (e.g. okay_nabu)")
    p_sat.add_argument("--persona", help="persona name (see prompts/)")
    p_sat.add_argument(
        "--token",
        default=os.environ.get("CHINWAG_TOKEN"),
        help="token, if the server requires one (default: $CHINWAG_TOKEN)",
    )
    p_sat.add_argument("--input-file", type=Path, help="speak this audio file instead of a mic")
    p_sat.add_argument("--output-file", type=Path, help="write the replies to this WAV file")
    p_sat.add_argument("--input-device", help="PortAudio input device (name or number)")
    p_sat.add_argument("--output-device", help="PortAudio output device (name or number)")
    p_sat.add_argument(
        "--barge-in",
        choices=["auto", "on", "off"],
        default="auto",
        help="speaking over a reply interrupts it (auto: with a wake word or a file)",
    )
    p_sat.add_argument(
        "--linger", type=float, default=3.0, help="--input-file: quiet seconds before exiting"
    )

    p_models = sub.add_parser(
        "models", help="list or fetch the default model weights, or a bigger chat model preset"
    )
    p_models.add_argument("action", choices=["list", "fetch"])
    p_models.add_argument(
        "name", nargs="?", help="fetch: a preset from `models list --available` (default: all "
        "default weights)"
    )  # fmt: skip
    p_models.add_argument(
        "--available", action="store_true", help="list: the presets `models fetch NAME` gets"
    )
    p_models.add_argument("--force", action="store_true", help="fetch even if present")
    p_models.add_argument("--config", type=Path, help="TOML config file (for [models] directory)")
    p_models.add_argument("--models-dir", type=Path, help=MODELS_DIR_HELP)

    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # faster-whisper logs every call at INFO.
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)
    # Above DEBUG, no exception text (it may quote the conversation) reaches the log.
    logs.redact_handlers()

    if args.command == "serve":
        overrides = _serve_overrides(args)
        try:
            settings = load_settings(args.config, overrides)
        except ConfigError as exc:
            print(f"chinwag: {settings_problem(exc, args.config, overrides)}", file=sys.stderr)
            return 2
        if args.print_config:
            print(settings_as_toml(settings))
            return 0
        try:
            with contextlib.suppress(KeyboardInterrupt):
                asyncio.run(serve(settings, args.ready_file))
        except StartupError as exc:
            print(f"chinwag: {exc}", file=sys.stderr)
            return exc.exit_code
        return 0
    if args.command == "chat":
        from clients.cli import run_chat

        return asyncio.run(run_chat(args.url, args.text, persona=args.persona, token=args.token))
    if args.command == "talk":
        from clients.talk import run_talk

        return asyncio.run(
            run_talk(args.url, args.wav, out=args.out, as_json=args.json, token=args.token)
        )
    if args.command == "satellite":
        from clients.satellite import SatelliteOptions, barge_in_default, run_satellite

        options = SatelliteOptions(
            url=args.url,
            name=args.name,
            wake_word=args.wake_word,
            persona=args.persona,
            token=args.token,
            barge_in=barge_in_default(args.barge_in, args.wake_word, args.input_file is not None),
            linger_s=args.linger,
        )
        with contextlib.suppress(KeyboardInterrupt):
            return asyncio.run(
                run_satellite(
                    options,
                    input_file=args.input_file,
                    output_file=args.output_file,
                    input_device=args.input_device,
                    output_device=args.output_device,
                )
            )
        return 0
    if args.command == "models":
        from server.models import (
            ModelError,
            fetch_all,
            fetch_preset,
            find_preset,
            list_models,
            list_presets,
            point_config_at,
        )

        overrides = _models_dir_override(args)
        try:
            directory = load_settings(args.config, overrides).models.directory
        except ConfigError as exc:
            print(f"chinwag: {settings_problem(exc, args.config, overrides)}", file=sys.stderr)
            return 2
        if args.action == "list":
            print(list_presets(directory) if args.available else list_models(directory))
            return 0
        try:
            if args.name is not None:
                # The one command that downloads from a model hub, because it was asked to.
                path = fetch_preset(find_preset(args.name), directory)
                config = args.config or (
                    Path(c) if (c := os.environ.get("CHINWAG_CONFIG")) else None
                )
                print(point_config_at(path, config))
            else:
                fetch_all(directory, force=args.force)
        except ModelError as exc:
            print(f"chinwag: {exc}", file=sys.stderr)
            return 1
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
