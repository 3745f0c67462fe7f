"""The one error type users see: a one-line message that names the fix."""


class XredError(Exception):
    """Bad input or missing resources. The CLI prints ``xred: error: <message>`` and exits 2."""
