"""Network blocker for the processes of tests/test_no_network.py (a notebook's kernel and its children).

Python imports ``sitecustomize`` at startup from ``sys.path``; the test puts this folder on
``PYTHONPATH`` together with ``KAGGLEKIT_NONET_LOG``. Then every socket connection and name lookup
of the process is refused, and appended (one line each) to that log file for the test to read; so is
one ``start`` line per process, which shows the blocker was loaded. The loopback interface and Unix
sockets stay open: the kernel talks to its client over them (through ZeroMQ, C code that passes none
of these functions anyway). ``HF_HUB_OFFLINE`` and ``TRANSFORMERS_OFFLINE`` are removed from the
environment, so the offline mode a notebook runs in is the one it sets itself. Without the variable
this module does nothing.
"""

import os
import socket
import sys

LOG = os.environ.get("KAGGLEKIT_NONET_LOG")
LOCAL_HOSTS = {"127.0.0.1", "::1", "localhost", "", None}


def _local(address) -> bool:
    if isinstance(address, (str, bytes)):  # a Unix socket path
        return True
    return isinstance(address, tuple) and address[0] in LOCAL_HOSTS


def _refuse(what: str, address) -> None:
    with open(LOG, "a", encoding="utf-8") as log:
        log.write(f"{os.getpid()} refused {what} {address!r}\n")
    raise OSError(101, f"network blocked by tests/nonet/sitecustomize.py: {what} {address!r}")


def _install() -> None:
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_getaddrinfo, real_create_connection = socket.getaddrinfo, socket.create_connection

    def connect(self, address):
        if not _local(address):
            _refuse("connect", address)
        return real_connect(self, address)

    def connect_ex(self, address):
        if not _local(address):
            _refuse("connect_ex", address)
        return real_connect_ex(self, address)

    def getaddrinfo(host, port, *args, **kwargs):
        if host not in LOCAL_HOSTS:
            _refuse("getaddrinfo", (host, port))
        return real_getaddrinfo(host, port, *args, **kwargs)

    def create_connection(address, *args, **kwargs):
        if not _local(address):
            _refuse("create_connection", address)
        return real_create_connection(address, *args, **kwargs)

    socket.socket.connect, socket.socket.connect_ex = connect, connect_ex
    socket.getaddrinfo, socket.create_connection = getaddrinfo, create_connection


if LOG:
    with open(LOG, "a", encoding="utf-8") as _log:
        _log.write(f"{os.getpid()} start {' '.join(getattr(sys, 'argv', []))}\n")
    for _key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.pop(_key, None)
    _install()
