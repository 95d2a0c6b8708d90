"""The privacy proof: a served chinwag makes no connection and no name lookup of its own.

`chinwag serve` runs as a process under `strace -f`, with the real models, a HOME of its own
and an environment without the variables server/__init__.py sets (so that the proof covers
the package setting them, not the test runner). It starts, answers a text turn and a voice
turn; then every connect/sendto/sendmsg of every thread is checked: loopback only, nothing to
port 53, no resolver socket (nscd, systemd-resolved, avahi), and nothing written under HOME
(onnxruntime's telemetry keeps a device id in ~/.cache/Microsoft/DeveloperTools/).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from clients.talk import read_wav, talk_turn
from server import PRIVACY_ENVIRONMENT
from tests.speech import recording

# onnxruntime stays quiet under CI; so must the server without these telling it.
CI_VARIABLES = (
    "CI", "TF_BUILD", "GITHUB_ACTIONS", "GITLAB_CI", "CIRCLECI", "TRAVIS", "JENKINS_URL",
    "CODEBUILD_BUILD_ID", "BUILDKITE", "TEAMCITY_VERSION", "APPVEYOR", "BITBUCKET_BUILD_NUMBER",
    "SYSTEM_TEAMFOUNDATIONCOLLECTIONURI", "ORT_RUNNING_UNIT_TESTS",
)  # fmt: skip
# Sockets a name lookup goes through besides DNS itself.
RESOLVER_SOCKETS = ("nscd/socket", "systemd/resolve", "avahi-daemon/socket")
# Telemetry that waits a while before it uploads is caught too: the server stays up this long.
QUIET_WATCH_S = 20.0

SYSCALL = re.compile(r"^(?P<pid>\d+)\s+(?P<call>connect|sendto|sendmsg|sendmmsg|accept4?)\(")
FAMILY = re.compile(r"sa_family=(AF_\w+)")
PORT = re.compile(r"sin6?_port=htons\((\d+)\)")
INET_ADDR = re.compile(r'inet_addr\("([^"]+)"\)|inet_pton\(AF_INET6?, "([^"]+)"')
UNIX_PATH = re.compile(r'sun_path=@?"([^"]*)"')


def outbound(trace: str) -> list[str]:
    """The syscalls in an strace log that leave the machine or look a name up."""
    bad = []
    for line in trace.splitlines():
        match = SYSCALL.match(line)
        if match is None or match["call"].startswith("accept"):
            continue
        family = FAMILY.search(line)
        if family is None:
            continue  # a send on a connected socket: its connect was checked
        port = PORT.search(line)
        if port is not None and int(port.group(1)) == 53:
            bad.append(line)  # DNS, even to a local stub resolver
        elif family.group(1) in ("AF_INET", "AF_INET6"):
            address = INET_ADDR.search(line)
            host = (address.group(1) or address.group(2)) if address else ""
            if not (host.startswith("127.") or host in ("::1", "::ffff:127.0.0.1")):
                bad.append(line)
        elif family.group(1) == "AF_UNIX":
            path = UNIX_PATH.search(line)
            if path is not None and any(s in path.group(1) for s in RESOLVER_SOCKETS):
                bad.append(line)
        elif family.group(1) not in ("AF_NETLINK", "AF_UNSPEC"):
            bad.append(line)  # AF_PACKET, AF_BLUETOOTH...: not what a local server needs
    return bad


def served_environment(home: Path) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in PRIVACY_ENVIRONMENT and name not in CI_VARIABLES
        and not name.startswith(("CHINWAG_", "XDG_"))
    }  # fmt: skip
    env["HOME"] = str(home)
    return env


def stop(traced: subprocess.Popen[str]) -> None:
    """SIGTERM to the server under strace (strace itself would only detach), then wait."""
    children = Path(f"/proc/{traced.pid}/task/{traced.pid}/children")
    pids = children.read_text().split() if children.exists() else []
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGTERM)
    if not pids:
        traced.terminate()
    try:
        traced.wait(30)
    except subprocess.TimeoutExpired:
        traced.kill()
        traced.wait(10)


async def text_and_voice_turns(url: str) -> tuple[str, str, str]:
    async with connect(url, max_size=None) as ws:
        assert json.loads(await ws.recv())["type"] == "session.started"
        await ws.send(json.dumps({"type": "session.update", "generation": {"max_tokens": 24}}))
        assert json.loads(await ws.recv())["type"] == "session.updated"
        await ws.send(json.dumps({"type": "user.message", "text": "What is a rainbow?"}))
        while (event := json.loads(await ws.recv()))["type"] != "reply.done":
            pass
        text_reply = event["text"]
        pcm, rate = read_wav(recording("spk1_snt1.wav").path)
        voice = await talk_turn(ws, pcm, rate, timeout=240)
    return text_reply, voice.transcript, voice.reply


@pytest.mark.models
@pytest.mark.slow
@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed (make setup)")
def test_a_served_conversation_makes_no_outbound_connection(tmp_path: Path) -> None:
    home, ready, trace_file = tmp_path / "home", tmp_path / "port", tmp_path / "strace.log"
    home.mkdir()
    command = [
        "strace", "-f", "-qq", "-o", str(trace_file),
        "-e", "trace=connect,sendto,sendmsg,sendmmsg,accept,accept4",
        sys.executable, "-m", "server", "serve", "--port", "0", "--ready-file", str(ready),
    ]  # fmt: skip
    server = subprocess.Popen(
        command, env=served_environment(home), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not ready.exists() and server.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ready.exists(), server.stderr.read() if server.stderr else "no ready file"
        started = time.monotonic()
        url = f"ws://127.0.0.1:{ready.read_text()}/"
        text_reply, transcript, voice_reply = asyncio.run(text_and_voice_turns(url))
        assert text_reply.strip() and transcript.strip() and voice_reply.strip()
        time.sleep(max(0.0, QUIET_WATCH_S - (time.monotonic() - started)))
    finally:
        stop(server)
    trace = trace_file.read_text()
    # The trace saw the server: it accepted the test's connection on loopback.
    assert re.search(r"accept4?\(.*127\.0\.0\.1", trace), trace[-2000:]
    written = sorted(str(p.relative_to(home)) for p in home.rglob("*"))
    problems = [*outbound(trace), *(f"wrote under HOME: {path}" for path in written)]
    assert problems == [], "\n".join(problems)


def inet(port: int, address: str, call: str = "connect") -> str:
    return f'12 {call}(5, {{sa_family=AF_INET, sin_port=htons({port}), sin_addr=inet_addr("{address}")}}, 16) = 0'  # noqa: E501


def inet6(port: int, address: str) -> str:
    return (
        f"12 connect(5, {{sa_family=AF_INET6, sin6_port=htons({port}), sin6_flowinfo=htonl(0), "
        f'inet_pton(AF_INET6, "{address}", &sin6_addr), sin6_scope_id=0}}, 28) = 0'
    )


def unix(path: str) -> str:
    return f'12 connect(3, {{sa_family=AF_UNIX, sun_path="{path}"}}, 110) = -1 ENOENT'


@pytest.mark.parametrize(
    ("line", "leaves"),
    [
        (inet(53, "10.0.0.53"), True),
        (inet(53, "127.0.0.53"), True),  # a local stub resolver is a lookup too
        (inet(443, "20.42.65.92"), True),
        (inet(443, "20.42.65.92", "sendto"), True),
        (inet6(443, "2603:1030::1"), True),
        (unix("/var/run/nscd/socket"), True),
        (unix("/run/systemd/resolve/io.systemd.Resolve"), True),
        (inet(8765, "127.0.0.1"), False),
        (inet6(80, "::1"), False),
        (unix("/tmp/.X11-unix/X0"), False),
        ('12 sendto(4, "\\x14", 20, 0, {sa_family=AF_NETLINK, nl_pid=0}, 12) = 20', False),
        ('12 sendto(7, "x", 1, 0, NULL, 0) = 1', False),
        (inet(40000, "127.0.0.1", "accept4"), False),
        (inet(40000, "10.1.1.1", "accept4"), False),  # accepted, not initiated
    ],
)
def test_the_trace_check_tells_outbound_from_local(line: str, leaves: bool) -> None:
    assert bool(outbound(line)) is leaves
