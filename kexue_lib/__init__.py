"""kexue_lib: the shared library of the kexue executable textbook.

Concept modules are imported by name (``from kexue_lib import rope``); this package
re-exports only the small helpers of ``_core`` every chapter needs.
"""

from kexue_lib._core import (
    check_positive,
    check_shape,
    check_simplex,
    default_device,
    make_generator,
    seeded,
    size_for_device,
    to_numpy64,
)

__all__ = [
    "check_positive",
    "check_shape",
    "check_simplex",
    "default_device",
    "make_generator",
    "seeded",
    "size_for_device",
    "to_numpy64",
]
