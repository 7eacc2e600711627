"""The model zoo: importing this package registers every architecture."""

from harness.zoo import cnn, transformers  # noqa: F401
