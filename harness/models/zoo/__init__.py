"""The model zoo: importing this package registers every architecture."""

from harness.models.zoo import cnn, timm_models, transformers  # noqa: F401
