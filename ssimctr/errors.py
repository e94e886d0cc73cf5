"""The one exception type for mistakes a user can fix (bad file, column, value or option)."""


class UserError(Exception):
    """A user mistake: the message names the file, column, value or option and the fix.

    The CLI prints it as one line and exits non-zero, without a traceback.
    """
