"""Request errors that carry their HTTP status and the request field they are about."""

from __future__ import annotations


class RequestError(Exception):
    """A client error: the API answers `status` with a message that names `field`."""

    status = 400

    def __init__(self, field: str, message: str):
        super().__init__(field, message)  # args rebuild the error when it crosses a process boundary
        self.field = field
        self.message = message

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class NotFound(RequestError):
    status = 404


class Conflict(RequestError):
    status = 409


class Invalid(RequestError):
    status = 422


class Unauthorized(RequestError):
    status = 401


class Forbidden(RequestError):
    status = 403


class TooMany(RequestError):
    status = 429
