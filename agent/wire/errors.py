"""Errors that cross the wire: each has a stable code and a message saying what to fix."""


class WireError(Exception):
    """A request or grant that the receiving side must refuse.

    `code` is the machine-readable `error` field of a 4xx answer; `status` its
    HTTP status; the message tells the sender what to fix and never holds a secret.
    """

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status

    def to_json(self) -> dict[str, str]:
        return {"error": self.code, "message": self.message}
