from __future__ import annotations

import numpy as np
import pytest

from mapforge.datasets import Dataset, detect_layout, load_dataset
from mapforge.errors import InputError
from mapforge.io.images import write_image
from tests.conftest import shared_dataset


@pytest.mark.parametrize(
    "name, layout",
    [
        ("blender_lego_400", "blender"),
        ("llff_fern", "llff"),
        ("middlebury_templeSparseRing", "middlebury"),
        ("strecha_fountain-P11", "strecha"),
        ("sceaux_castle", "folder"),
        ("nle_tower", "folder"),
    ],
)
def test_shared_data_layouts_are_recognised(name, layout):
    assert detect_layout(shared_dataset(name)) == layout


def test_every_image_has_a_camera_of_its_actual_size():
    from mapforge.io.images import image_size

    for name in ("middlebury_templeSparseRing", "strecha_fountain-P11", "sceaux_castle", "nle_tower", "llff_fern"):
        data = load_dataset(shared_dataset(name))
        assert isinstance(data, Dataset)
        assert len(data.cameras) == len(data.image_names)
        for index in range(len(data)):
            path = data.image_paths[index]
            assert image_size(path) == (data.cameras[index].width, data.cameras[index].height)
        assert sorted(data.split["train"] + data.split["test"]) == list(range(len(data)))


def test_unrecognised_missing_and_bad_options(tmp_path):
    with pytest.raises(InputError, match="not a recognised data set"):
        load_dataset(tmp_path)
    with pytest.raises(InputError, match="not found"):
        load_dataset(tmp_path / "nothing")
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        load_dataset(tmp_path / "a.txt")
    with pytest.raises(InputError, match="unknown data set layout"):
        load_dataset(tmp_path, layout="nope")
    write_image(tmp_path / "images" / "a.png", np.zeros((4, 4, 3)))
    assert len(load_dataset(tmp_path, layout="folder")) == 1
    with pytest.raises(InputError, match="does not take background"):
        load_dataset(tmp_path, background=(1, 1, 1))
    with pytest.raises(InputError, match="downscale"):
        load_dataset(tmp_path, downscale=0)
