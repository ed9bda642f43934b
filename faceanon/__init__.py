"""faceanon: key-driven, identity-verifiable anonymization of face-image datasets (KFAAR)."""

import os
from typing import TYPE_CHECKING

__version__ = "0.1.0"
# oneDNN (torch's CPU convolutions) keeps a compiled primitive for every input shape it meets,
# up to 1,024 of them by default; the detector's and recognizer's batch sizes change from photo
# to photo, so a long run's memory kept growing with the shapes it met (a tenth more from 1,000
# to 13,233 LFW images). 64 recent shapes cover a run's steady state. Set before torch first
# runs a convolution; a value in the environment wins.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "64")
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
