"""A tiny greeting package used to demonstrate detpack."""

from importlib import resources

__version__ = "0.1.0"


def greet(name: str = "world") -> str:
    """Return a greeting for *name*, rendered from the packaged template."""
    template = resources.files(__name__).joinpath("templates/greeting.txt").read_text("utf-8")
    return template.strip().format(name=name)


def hello() -> str:
    return greet()
