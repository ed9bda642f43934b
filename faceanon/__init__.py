"""faceanon: key-driven, identity-verifiable anonymization of face-image datasets (KFAAR)."""

from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["anonymize_image"]

if TYPE_CHECKING:
    from faceanon.anonymize import anonymize_image


def __getattr__(name: str) -> object:
    # The library entry point is imported on first use, so that ``import faceanon`` (and so the
    # CLI's start) does not load torch and the models' code.
    if name == "anonymize_image":
        from faceanon.anonymize import anonymize_image

        return anonymize_image
    raise AttributeError(f"module 'faceanon' has no attribute {name!r}")
