class FrontendUnavailable(RuntimeError):
    """A language's front end cannot run here: its optional extra or dictionary is missing."""
