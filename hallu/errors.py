"""The one exception type for mistakes a user can fix (bad config, bad prompt file, ...).

The CLI prints its message alone (no traceback) and exits with code 2. Every message names the
config key or file at fault and says how to fix it.
"""


class UserError(Exception):
    """A problem in what the user asked for; the message says which key or file and the fix."""


EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that a run stops as it does on Ctrl-C."""


class Interrupted(Exception):
    """A run stopped by Ctrl-C or SIGTERM; what it stored is kept, and it resumes by its id."""

    def __init__(self, terminated: bool, run_id: str | None):
        self.terminated, self.run_id = terminated, run_id
        self.code = EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
        again = f"rerun with run_id={run_id} to resume" if run_id else "nothing was stored"
        what = "SIGTERM" if terminated else "Ctrl-C"
        super().__init__(f"stopped by {what}; the results stored so far are kept: {again}")
