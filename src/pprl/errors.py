"""The errors pprl reports to a person as one line (the CLIs print `str(exc)`, no traceback)."""


class RunError(ValueError):
    """A run dir, checkpoint or input that cannot be used (missing, corrupt, from another model, a missing extra)."""
