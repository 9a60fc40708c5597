"""The one exception type for expected `raft-distill` failures (bad config, data, models)."""


class DistillError(Exception):
    """Something the user can fix: the message says what was wrong, where, and what to do."""
