"""The one exception type for expected contract failures (bad files, versions, models)."""


class SchemaError(Exception):
    """A file or model does not meet the contract; the message says where and what to do."""
