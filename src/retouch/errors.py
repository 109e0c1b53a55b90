"""Everything retouch raises on purpose.

```
RetouchError
 +-- InvalidRequest            bad input: the message says which file/value and what to do
 |    +-- InvalidImage         not an image, truncated, unsupported mode
 |    |    +-- ImageTooLarge   over a pixel or byte limit
 |    +-- MaskError            wrong size, empty, covers everything
 |    +-- OutputExists         refusing to overwrite a file without overwrite=True
 +-- UnsupportedOperation      the provider does not do this operation or parameter
 |    +-- ProviderUnavailable  no provider that could do it is ready (what to install or set)
 +-- ModelNotAvailable         weights missing: `retouch models pull NAME`
 +-- DownloadError             a pull failed: offline, HTTP error, server unreachable
 |    +-- ChecksumMismatch     the file is not the one the catalog names (it was deleted)
 +-- DependencyMissing         an optional extra is not installed: `pip install retouch[X]`
 |                             (also an ImportError)
 +-- ProviderError             a backend failed while running
 |    +-- AuthenticationError
 |    +-- RateLimited          .retry_after seconds, when the service says
 |    +-- ContentPolicy
 |    +-- ProviderTimeout
 |    +-- ServerError
 +-- Cancelled                 a progress callback asked to stop
 +-- CheckFailed               a batch quality check failed on an output (retouch.batch)
 +-- ConfigurationError        providers registered twice, a plugin that does not load
```

The library raises these; the CLI maps them to exit codes (retouch.cli) and the HTTP
service to status codes. Nothing else translates them.
"""

from __future__ import annotations


class RetouchError(Exception):
    """Base class of every error retouch raises on purpose."""


class InvalidRequest(RetouchError, ValueError):
    """The request cannot be run as given; the message says what to change.

    ``param`` names the request field at fault, when there is one (the HTTP error's
    ``param``)."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        self.param = param
        super().__init__(message)


class InvalidImage(InvalidRequest):
    """An input is not a readable image, or one retouch refuses (too large, odd mode)."""


class ImageTooLarge(InvalidImage):
    """An input is over a pixel or byte limit."""


class MaskError(InvalidRequest):
    """A mask does not fit its image or selects nothing / everything."""


class OutputExists(InvalidRequest):
    """The output file exists and overwriting was not asked for."""


class UnsupportedOperation(RetouchError):
    """The chosen provider does not support this operation or parameter (``param``)."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        self.param = param
        super().__init__(message)


class ProviderUnavailable(UnsupportedOperation):
    """No provider that could run the request is ready; the message says what each needs."""


class ModelNotAvailable(RetouchError):
    """The weights a provider needs are not on this machine."""

    def __init__(self, model: str, hint: str | None = None, *, pullable: bool = True) -> None:
        self.model = model
        message = (
            f"model {model!r} is not on this machine; fetch it with: retouch models pull {model}"
        )
        if hint:
            message = f"{message} ({hint})"
        if not pullable:  # gated weights: retouch cannot fetch them, the hint says how
            message = f"model {model!r} is not on this machine; {hint}"
        super().__init__(message)


class DependencyMissing(RetouchError, ImportError):
    """An optional dependency is missing; the message names the pip extra.

    Also an ImportError, so code written for other toolkits that catches ImportError for
    "provider not installed" catches this too."""

    def __init__(self, package: str, extra: str | None = None, purpose: str | None = None) -> None:
        self.package = package
        self.extra = extra
        what = f" for {purpose}" if purpose else ""
        how = f"pip install 'retouch[{extra}]'" if extra else f"pip install {package}"
        super().__init__(f"the package {package!r} is needed{what}; install it with: {how}")
        self.name = package


class ProviderError(RetouchError):
    """A backend failed while running the request."""

    def __init__(self, message: str, *, provider: str | None = None) -> None:
        self.provider = provider
        super().__init__(f"{provider}: {message}" if provider else message)


class AuthenticationError(ProviderError):
    """The service refused the credentials."""


class RateLimited(ProviderError):
    """The service asked us to slow down."""

    def __init__(
        self, message: str, *, provider: str | None = None, retry_after: float | None = None
    ) -> None:
        self.retry_after = retry_after
        super().__init__(message, provider=provider)


class ContentPolicy(ProviderError):
    """The service refused the content."""


class ProviderTimeout(ProviderError):
    """The backend did not answer in time."""


class ServerError(ProviderError):
    """The backend failed on its side."""


class Cancelled(RetouchError):
    """The work was cancelled by a progress callback."""


class CheckFailed(RetouchError):
    """A quality check a batch recipe asks for failed on an output (the item fails)."""


class ConfigurationError(RetouchError):
    """retouch is set up wrongly: a provider registered twice, a plugin that fails to load."""


class DownloadError(RetouchError):
    """Fetching weights failed; nothing half-written is left where it could be used."""


class ChecksumMismatch(DownloadError):
    """The downloaded file's checksum differs from the catalog's; the file was removed."""
