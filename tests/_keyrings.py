"""An in-memory OS keyring for tests: colabremote takes it for a real one, and nothing leaves
the process. Shared by the sign-in and the secrets tests."""

from __future__ import annotations


class MemoryKeyring:
    """An encrypting OS keyring, as far as colabremote can tell."""

    priority = 5

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, user: str) -> str | None:
        return self.items.get((service, user))

    def set_password(self, service: str, user: str, value: str) -> None:
        self.items[(service, user)] = value

    def delete_password(self, service: str, user: str) -> None:
        import keyring.errors

        if (service, user) not in self.items:
            raise keyring.errors.PasswordDeleteError("none")
        del self.items[(service, user)]
