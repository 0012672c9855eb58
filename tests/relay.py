"""A loopback TCP relay the test controls: forwards to a server until cut.

Cut, it drops whatever either side sends and forwards nothing, and accepts
new connections without ever answering on them: a partition, as a client
sees one (no reset, no answer), built on loopback only.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading

__all__ = ["Relay"]


class Relay:
    """Forward ``127.0.0.1:<port>`` to ``127.0.0.1:<target>`` until :meth:`cut`."""

    def __init__(self, target: int) -> None:
        """Listen on a free loopback port; forward from a thread of its own."""
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._peers: dict[socket.socket, socket.socket | None] = {}
        self._cut = threading.Event()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def cut(self) -> None:
        """From now on, nothing passes either way."""
        self._cut.set()

    def close(self) -> None:
        """Stop the thread and close every socket."""
        self._closed.set()
        self._thread.join(10)
        for sock in [self._listener, *self._peers]:
            sock.close()
        self._selector.close()

    def _run(self) -> None:
        while not self._closed.is_set():
            for key, _ in self._selector.select(0.05):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self._listener:
                    self._accept()
                else:
                    self._pump(sock)

    def _accept(self) -> None:
        client, _ = self._listener.accept()
        upstream = None
        if not self._cut.is_set():
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self._peers[upstream] = client
            self._selector.register(upstream, selectors.EVENT_READ)
        self._peers[client] = upstream
        self._selector.register(client, selectors.EVENT_READ)

    def _pump(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(65536)
        except OSError:
            data = b""
        peer = self._peers.get(sock)
        if not data:
            for end in (sock, peer):
                if end is not None and end in self._peers:
                    self._selector.unregister(end)
                    del self._peers[end]
                    end.close()
            return
        if peer is not None and not self._cut.is_set():
            with contextlib.suppress(OSError):
                peer.sendall(data)
