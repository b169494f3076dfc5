"""A local emulator of the Azure Service Bus REST API (``python -m peeklock.emulator``).

Needs only the standard library and aiohttp; never imports the C extension.
See docs/emulator.md (users) and docs/emulator-contract.md (test controls).
"""

DEFAULT_KEY_NAME = "RootManageSharedAccessKey"
DEFAULT_KEY = "SAS_KEY_VALUE"
READY_PREFIX = "peeklock emulator ready: "

__all__ = ["DEFAULT_KEY_NAME", "DEFAULT_KEY", "READY_PREFIX", "missing_dependency"]


def missing_dependency() -> "str | None":
    """The one line to print when the emulator's one dependency, aiohttp (an optional extra
    of the package), cannot be imported; None when it can."""
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        return (
            "peeklock emulator: needs the aiohttp package, which is not installed: "
            "pip install aiohttp (or pip install 'peeklock[emulator]')"
        )
    return None
