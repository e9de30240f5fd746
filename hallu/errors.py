"""The one exception type for mistakes a user can fix (bad config, bad prompt file, ...).

The CLI prints its message alone (no traceback) and exits with code 2. Every message names the
config key or file at fault and says how to fix it.
"""


class UserError(Exception):
    """A problem in what the user asked for; the message says which key or file and the fix."""


EXIT_USER_ERROR = 2
