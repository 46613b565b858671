"""The command Beam runs to start a local worker: hand the worker's part to a warm process, else start cold.

Run as a script (``python -I worker_launcher.py POOL COLD...``) by Beam's local runner for each worker it starts
(``pipeline.warm_workers`` explains why). Standard library only, and no seqpack import: it starts in a few
milliseconds, under ``-I``, whatever ``PYTHONPATH`` says.

It claims one of the pool's warm processes (a file created with ``O_EXCL``, so two launchers never claim the same
one), connects to it, and sends it this process's environment and working directory, with its standard streams
(stdin, stdout, stderr) as file descriptors. The warm process answers ``A`` (adopted: it is now the worker) or
``R`` (refused: its environment differs). Once adopted, the launcher waits and exits with the worker's exit status;
if the launcher is killed, the warm process sees its connection close and ends too.

Anything else (no pool, no process left to claim, a refusal, a connection that fails or stays silent) runs
``COLD...``, Beam's own worker command, in this process: the cold start.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time

ADOPTED = b"A"
REFUSED = b"R"
SLOTS_FILE = "slots"
"""In the pool directory: how many warm processes it has (slot ``i`` listens on ``socket_path(pool, i)``)."""
SERVER_PID_FILE = "server.pid"
"""In the pool directory: the server that forks the warm processes; a launcher waits for a socket while it lives."""
START_SECONDS = 30.0
"""How long a launcher waits for a warm process that is still starting (alive, not yet listening)."""
ANSWER_SECONDS = 120.0
"""How long a launcher waits for a warm process to answer: it may still be importing, which takes seconds, but a
process that hangs must not hang the run."""


def socket_path(pool: str, slot: int) -> str:
    return os.path.join(pool, f"{slot}.sock")


def claim_path(pool: str, slot: int) -> str:
    return os.path.join(pool, f"claim-{slot}")


def adopted_path(pool: str, slot: int) -> str:
    return os.path.join(pool, f"adopted-{slot}")


def encode_request(environ: dict[str, str], cwd: str) -> bytes:
    """What a launcher sends: the length (8 bytes, big-endian) and the JSON of its environment and directory."""
    body = json.dumps({"env": environ, "cwd": cwd}).encode()
    return len(body).to_bytes(8, "big") + body


def _claim(pool: str) -> socket.socket | None:
    """A connection to a warm process this launcher alone has claimed, or None."""
    try:
        with open(os.path.join(pool, SLOTS_FILE), encoding="ascii") as handle:
            slots = int(handle.read())
    except (OSError, ValueError):
        return None
    for slot in range(slots):
        try:
            os.close(os.open(claim_path(pool, slot), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except OSError:
            continue  # claimed by another launcher
        connection = _connect(pool, slot)
        if connection is not None:
            return connection
    return None


def _server_alive(pool: str) -> bool:
    try:
        with open(os.path.join(pool, SERVER_PID_FILE), encoding="ascii") as handle:
            os.kill(int(handle.read()), 0)
    except (OSError, ValueError):
        return False
    return True


def _connect(pool: str, slot: int) -> socket.socket | None:
    """A connection to the warm process of ``slot``, waiting while it is alive but not yet listening; None if it
    died or never started."""
    deadline = time.monotonic() + START_SECONDS
    while True:
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            connection.connect(socket_path(pool, slot))
            return connection
        except OSError:
            connection.close()
        if time.monotonic() > deadline or not _server_alive(pool):
            return None
        time.sleep(0.01)


def _hand_over(connection: socket.socket) -> bool:
    """Send the environment and the standard streams; True once the warm process adopted them."""
    try:
        connection.settimeout(ANSWER_SECONDS)
        request = encode_request(dict(os.environ), os.getcwd())
        sent = socket.send_fds(connection, [request], [0, 1, 2])
        connection.sendall(request[sent:])
        return connection.recv(1) == ADOPTED
    except OSError:
        return False


def launch(pool: str, cold: list[str]) -> None:
    """Be the stand-in of a warm worker until it ends, then exit with its status; or become the cold worker."""
    connection = _claim(pool)
    if connection is not None and _hand_over(connection):
        connection.settimeout(None)
        try:
            status = connection.recv(1)
        except OSError:
            status = b""
        os._exit(status[0] if status else 1)
    if connection is not None:
        connection.close()
    os.execv(cold[0], cold)


if __name__ == "__main__":
    launch(sys.argv[1], sys.argv[2:])
