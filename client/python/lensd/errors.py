"""Errors of lensd calls: one exception class per gRPC status code, all subclasses of
lensd.Error (itself a grpc.RpcError, so code that catches that keeps working). The message is
the server's own (str(e) is "STATUS: message"); .code() and .details() are as grpc's."""
from typing import Dict

import grpc


class Error(grpc.RpcError):
    """A failed lensd call."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self._code, self._message = code, message

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._message

    def __str__(self) -> str:
        return f"{self._code.name}: {self._message}"


def _class_name(code: grpc.StatusCode) -> str:
    return "".join(part.capitalize() for part in code.name.split("_"))


# lensd.InvalidArgument, lensd.ResourceExhausted, lensd.Unavailable, lensd.NotFound, ...
ERRORS: Dict[grpc.StatusCode, type] = {
    code: type(_class_name(code), (Error,), {"__doc__": f"The call failed with {code.name}."})
    for code in grpc.StatusCode if code != grpc.StatusCode.OK
}


def translate(e: grpc.RpcError) -> Error:
    """The lensd.Error for a grpc.RpcError (the same object if it is one already)."""
    if isinstance(e, Error):
        return e
    code = e.code() if hasattr(e, "code") else grpc.StatusCode.UNKNOWN
    details = e.details() if hasattr(e, "details") else str(e)
    return ERRORS.get(code, ERRORS[grpc.StatusCode.UNKNOWN])(code, details or "")


class Stream:
    """A server stream whose errors arrive as lensd.Error; cancel() as grpc's."""

    def __init__(self, call):
        self._call = call

    def __iter__(self):
        return self

    def __next__(self):
        try:
            return next(self._call)
        except grpc.RpcError as e:
            raise translate(e) from None

    def cancel(self) -> None:
        self._call.cancel()
