"""The error types users see."""

from __future__ import annotations


class FnacError(Exception):
    """A user mistake or an unusable input (a missing file, a wrong option, a model that is not ours): the
    command line prints its message as one line and exits with status 2. Every such error derives from it."""


class LocalizeError(FnacError):
    """An input or request that could not be localized, with the API's stable `code` and a one-line `message`
    (the same code and message `POST /localize` answers in `{"error": {"code", "message"}}`). `status` is the
    HTTP status when the error came from a server, None when it was raised locally."""

    def __init__(self, code: str, message: str, status: int | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status

    def __reduce__(self):  # keep code + message (+ status) when crossing a process boundary
        return (type(self), (self.code, self.message, self.status))
