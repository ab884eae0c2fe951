"""The error every command turns into one plain sentence (exit 2, no traceback)."""


class UserError(Exception):
    """Stops a command with one plain sentence for the user (no traceback)."""


def raise_if_interrupted(error: BaseException) -> None:
    """Raise KeyboardInterrupt when `error` wraps one: Ctrl-C (or SIGTERM, which the CLIs turn into it) stops, it is no failed frame.

    A signal whose handler raises while a C extension runs can surface as
    another exception (SystemError: "returned a result with an exception
    set") with the KeyboardInterrupt as its cause or context. The fail-closed
    handlers catch Exception, so without this an interrupt would count as one
    dropped frame and the run would go on.
    """
    seen, cause = set(), error
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KeyboardInterrupt):
            raise KeyboardInterrupt from error
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
