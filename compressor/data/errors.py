"""The one exception type of the data layer."""


class DataError(Exception):
    """A data set that cannot be used (missing file, wrong keys, mismatched counts, unreadable image).

    The message is one line that names the file (and key, row or index) at fault; the CLI prints it and exits 2.
    """
