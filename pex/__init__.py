"""PEX: advance reservation of virtual machines with negotiation (OpenPEX re-imagined)."""

__version__ = "0.1.0"
