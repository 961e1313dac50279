"""The one exception type for problems with input data (files, columns, values, empty results)."""


class DataError(Exception):
    """Raised with one clear message when input data cannot be prepared.

    Configuration mistakes (a negative threshold, an unknown rule name) raise `ValueError`
    instead; a `DataError` always points at the data: a file, a column, a value, or what the
    filters left over.
    """
