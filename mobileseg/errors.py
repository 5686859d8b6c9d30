"""Error types. Every user-facing failure is a `MobilesegError` whose message is one clear line."""

from __future__ import annotations


class MobilesegError(Exception):
    """Base class: the CLI prints `str(error)` as one red line and exits with code 2."""


class UnknownModelError(MobilesegError, LookupError):
    def __init__(self, name: str, known: list[str]):
        import difflib

        close = difflib.get_close_matches(name, known, n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        super().__init__(f"unknown model {name!r}; known models: {', '.join(known)}.{hint}")


class DuplicateRegistrationError(MobilesegError):
    pass


class CheckpointError(MobilesegError):
    """A checkpoint that cannot be read, or does not fit the model (missing, unexpected, mis-shaped keys)."""


class InputSizeError(MobilesegError, ValueError):
    pass


class MissingDependencyError(MobilesegError):
    def __init__(self, what: str, package: str, extra: str | None = None):
        hint = f"pip install 'mobileseg[{extra}]'" if extra else f"pip install {package}"
        super().__init__(f"{what} needs the Python package {package!r}, which is not installed ({hint})")


class RecipeError(MobilesegError):
    pass


class ExportError(MobilesegError):
    pass


class ArtifactError(MobilesegError):
    pass


class RuntimeUnavailableError(MobilesegError):
    pass
