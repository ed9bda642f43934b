"""The anonymization methods, one module each, registered by name (``registry``); the
interface they implement is in ``base``. Importing this package registers the shipped ones."""

# Registered in this order, which --help follows: the default first.
from faceanon.methods import kfaar, ivfg, blur, pixelate, obfuscate  # noqa: F401,I001
from faceanon.methods.registry import Method, all_methods, get_method, register

__all__ = ["Method", "all_methods", "get_method", "register"]
