"""faceanon: key-driven, identity-verifiable anonymization of face-image datasets (KFAAR)."""

__version__ = "0.1.0"
