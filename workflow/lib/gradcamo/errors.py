"""The exception raised for bad input anywhere in gradcamo."""


class InputError(ValueError):
    """Bad user input: a broken file, wrong axes, a bad sample-sheet row or config key.

    The message always names the offending file, row or key so that a user can fix it
    without reading a traceback.
    """
