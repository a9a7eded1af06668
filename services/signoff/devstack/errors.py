class DevStackError(RuntimeError):
    """The embedded infrastructure could not be started or reached; the message is one line for the operator."""
