"""The codec tests' fixtures: tiny models and fake patch trees."""

from tests.codec.conftest import fake_patches, tiny_ckpt  # noqa: F401
