"""The package version and the wire-protocol level we implement."""

__version__ = "0.1.0"

#: The Arkor SDK protocol level this client speaks (the first token of ``X-Arkor-Client``).
PROTOCOL_VERSION = "0.0.3"

USER_AGENT = f"arkor/{PROTOCOL_VERSION} arkor-trio/{__version__}"
