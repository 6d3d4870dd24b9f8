# jaxtyping's import hook resolves its checker as the attribute path
# ``tests.shapecheck.shapes_only`` after a plain ``import tests``.
from . import shapecheck  # noqa: F401
