"""The one thing a kernel connection must do: carry Jupyter messages both ways."""

from __future__ import annotations

import abc

from .messages import Message


class Transport(abc.ABC):
    """A bidirectional stream of Jupyter messages to one kernel.

    ``receive`` returns messages from every channel (shell, iopub, stdin, control) in arrival
    order and raises :class:`~colabremote.exceptions.ConnectionLost` once the connection is gone.
    """

    #: Largest binary payload to put in one message (servers may refuse larger ones).
    max_message_bytes: int = 8 * 1024 * 1024

    @abc.abstractmethod
    async def send(self, msg: Message) -> None: ...

    @abc.abstractmethod
    async def receive(self) -> Message: ...

    @abc.abstractmethod
    async def close(self) -> None: ...
