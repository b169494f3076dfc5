"""peeklock: Azure Service Bus REST message locks with background renewal.

The emulator subpackage (``peeklock.emulator``) works without the C extension;
everything else is loaded from the compiled core.
"""
__version__ = "0.1.0"
