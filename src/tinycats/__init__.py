"""tinycats: small image models of cats, trained locally or on Modal, without losing work."""

__version__ = "0.1.0"
