"""The one exception type for expected stage-1 failures; the CLI prints it without a traceback."""


class RaftDataError(Exception):
    """Bad config, bad input or an unusable model; the message says where and what to do."""
