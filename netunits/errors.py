"""The one exception meant for the user."""


class PipelineError(Exception):
    """An error meant for the user: one line naming the key or file, what was wrong, what is allowed.

    run_stage (netunits.runtime) prints it as `error: <message>` and exits with status 2.
    """
