"""Modules that compose several concepts: Transformer blocks, token mixers, encoders, VAEs.

Import the submodule by name, e.g. ``from kexue_lib.models.transformer import TinyTransformer``
or ``from kexue_lib.models import mixers``. Nothing is re-exported here, so importing the
package stays cheap.
"""

__all__: list[str] = []
