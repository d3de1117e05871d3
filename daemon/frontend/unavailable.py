"""The one error of a language front end that cannot run here, apart from the text it was given."""


class FrontendUnavailable(ValueError):
    """A language's front end cannot run here: its module, optional extra or dictionary is missing (the message
    names what to install). A ValueError, so whoever reports unreadable text reports it in one line; the engine lets
    it through unwrapped, so the command line exits with the setup code for it."""
