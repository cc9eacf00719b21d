"""GalaxyMNIST loading (the galaxy_datasets layout, on small files written in it) and Zoobot orbit activations
(a randomly initialised ConvNeXt-nano saved to a file, as the real weights would be)."""

from __future__ import annotations

import pytest
import torch

from saebench.data.galaxy import (
    CATALOG_NAMES,
    build_zoobot_encoder,
    load_galaxy_mnist,
    write_galaxy_mnist,
    zoobot_orbit_activations,
)
from saebench.data.shapes import rotate_images

pytest.importorskip("pyarrow")  # pandas reads and writes parquet catalogs through it


def _flat_images(values: list[int], size: int = 16) -> torch.Tensor:
    """Images of one grey level each (JPEG keeps flat images to within a grey level or two)."""
    return torch.tensor(values, dtype=torch.uint8)[:, None, None, None].expand(-1, 3, size, size).contiguous()


def test_round_trip_in_catalog_order(tmp_path):
    write_galaxy_mnist(tmp_path, "train", _flat_images([10, 200, 90]), torch.tensor([3, 0, 2]))
    write_galaxy_mnist(tmp_path, "test", _flat_images([50]), torch.tensor([1]))
    images, labels = load_galaxy_mnist(tmp_path, "train")
    assert images.shape == (3, 3, 16, 16) and images.dtype == torch.uint8
    assert labels.tolist() == [3, 0, 2]
    # JPEG (quality 95) of a flat grey image: every pixel within 2 levels of the original
    assert (images.float().mean(dim=(1, 2, 3)) - torch.tensor([10.0, 200.0, 90.0])).abs().max() <= 2
    assert load_galaxy_mnist(tmp_path, "train", limit=2)[1].tolist() == [3, 0]
    assert load_galaxy_mnist(tmp_path, "test")[1].tolist() == [1]


def test_reads_the_package_layout(tmp_path):
    # the layout galaxy_datasets writes: extra catalog columns, images under images/ by 'filename'
    import pandas as pd
    from PIL import Image

    (tmp_path / "images").mkdir()
    Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "images" / "a1.jpg")
    catalog = pd.DataFrame({"id_str": ["x"], "filename": ["a1.jpg"], "label": [2], "ra": [1.0]})
    catalog.to_parquet(tmp_path / CATALOG_NAMES["test"])
    images, labels = load_galaxy_mnist(tmp_path, "test")
    assert labels.tolist() == [2] and images.shape == (1, 3, 8, 8)
    assert images[0, 0].float().mean() > 240 and images[0, 2].float().mean() < 15  # red stays red


def test_bad_inputs_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="SAEBENCH_GALAXY_MNIST"):
        load_galaxy_mnist(tmp_path, "train")
    with pytest.raises(ValueError, match="split must be one of"):
        load_galaxy_mnist(tmp_path, "val")
    write_galaxy_mnist(tmp_path, "train", _flat_images([1, 2]), torch.tensor([0, 1]))
    (tmp_path / "images" / "train_1.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="train_1.jpg"):
        load_galaxy_mnist(tmp_path, "train")
    write_galaxy_mnist(tmp_path, "test", _flat_images([1]), torch.tensor([7]))
    with pytest.raises(ValueError, match="class indices"):
        load_galaxy_mnist(tmp_path, "test")


@pytest.fixture(scope="module")
def zoobot_file(tmp_path_factory):
    """A randomly initialised timm convnext_nano saved as a state-dict file, standing in for Zoobot's."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = timm.create_model("convnext_nano", pretrained=False, num_classes=0).eval()
    path = tmp_path_factory.mktemp("zoobot") / "convnext_nano.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return model, path


def test_encoder_loads_weights_and_cuts_after_the_hooked_stage(zoobot_file):
    model, path = zoobot_file
    encoder = build_zoobot_encoder(path, hook=1)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        expected = model.stages[1](model.stages[0](model.stem(x)))
        assert torch.allclose(encoder(x), expected)
    assert expected.shape[1] == 160  # ConvNeXt-nano stage widths 80, 160, 320, 640: hook 1 is 160-d


def test_encoder_rejects_other_weights(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"fc.weight": torch.zeros(2, 2)}, str(path))
    with pytest.raises(ValueError, match="not a timm convnext_nano state dict"):
        build_zoobot_encoder(path)
    with pytest.raises(ValueError, match="hook must be a stage index"):
        build_zoobot_encoder(None, hook=4)


def test_orbit_member_p_is_the_rotated_image(zoobot_file):
    _, path = zoobot_file
    encoder = build_zoobot_encoder(path, hook=1)
    images = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    acts = zoobot_orbit_activations(encoder, images, image_size=32)
    assert acts.shape == (2, 4, 160)
    rotated = zoobot_orbit_activations(encoder, rotate_images(images, 1), image_size=32)
    # member 1 of x is x rotated once, i.e. member 0 of rot90(x); float32 convolutions reordered: 1e-5
    assert torch.allclose(acts[:, 1], rotated[:, 0], atol=1e-5)
    with pytest.raises(ValueError, match="images must be"):
        zoobot_orbit_activations(encoder, images[:, :1])
