"""The error every command turns into one plain sentence (exit 2, no traceback)."""


class UserError(Exception):
    """Stops a command with one plain sentence for the user (no traceback)."""
