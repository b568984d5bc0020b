"""The codec tests' fixtures: tiny models and fake patch trees; and a model of one RVQ depth."""

import pytest

from tests.codec.conftest import fake_patches, make_checkpoint, other_ckpt, tiny_ckpt  # noqa: F401


@pytest.fixture(scope="session")
def single_depth_ckpt(tmp_path_factory, fake_patches):  # noqa: F811 (the fixture above)
    """A tiny model with one RVQ stage: one rate-distortion point, no curve for a BD-rate; at
    downsample 4, a rate JPEG 2000 reaches (tiny_ckpt's first stage is below its header)."""
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "single.pt", fake_patches,
                           overrides=["quantizer.depth=1", "model.downsample=4"])
