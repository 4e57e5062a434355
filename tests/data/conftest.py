"""Small on-disk fixtures in every supported layout, generated, no downloads."""

import json
import os
import pickle
import tarfile
from importlib import resources

import pytest

from tests.data.data_fixtures import (
    FOLDER_SPLITS,
    class_colour,
    fake_cifar_arrays,
    write_class_folder,
    write_image,
)


@pytest.fixture(scope="session")
def folder_root(tmp_path_factory):
    """``root/{train,val,test}/<class>/<images>`` (`FOLDER_SPLITS`); class_0 is JPEG."""
    root = tmp_path_factory.mktemp("image_folder")
    for split, classes in FOLDER_SPLITS.items():
        for name, (k, count) in classes.items():
            write_class_folder(str(root / split / name), k, count, ".jpg" if k == 0 else ".png")
    return str(root)


@pytest.fixture
def make_folder(tmp_path):
    """Factory: ``make_folder({relative_class_path: (class_id, count)})`` -> root."""

    def make(classes):
        root = str(tmp_path / "root")
        for name, (k, count) in classes.items():
            write_class_folder(os.path.join(root, name), k, count)
        return root

    return make


MINI_PLAN = {
    "train": ["n02000001", "n01000001", "n03000001", "n04000001"],
    "val": ["n05000001", "n06000001"],
    "test": ["n07000001", "n08000001"],
}


@pytest.fixture(scope="session")
def mini_root(tmp_path_factory):
    """miniImageNet layout (images/ + split/*.csv), `MINI_PLAN` classes, 3 images each.

    CSV rows interleave the classes (image 0 of each class, then image 1,
    ...), and train lists n02... before n01..., so labels must follow first
    appearance, not sorted names. Class ``MINI_PLAN`` order = colour id.
    """
    root = tmp_path_factory.mktemp("mini")
    k = 0
    for split, wnids in MINI_PLAN.items():
        rows = []
        for position, wnid in enumerate(wnids):
            for i in range(3):
                name = f"{wnid}{i:08d}.jpg"
                write_image(str(root / "images" / name), class_colour(k + position), (30, 40))
                rows.append((i, position, f"{name},{wnid}"))
        k += len(wnids)
        rows.sort()
        os.makedirs(root / "split", exist_ok=True)
        (root / "split" / f"{split}.csv").write_text(
            "filename,label\n" + "\n".join(row for _, _, row in rows) + "\n"
        )
    return str(root)


@pytest.fixture(scope="session")
def cub_root(tmp_path_factory):
    """``CUB_200_2011/images/<class folder>`` for the 50 val classes only, 3 images each."""
    root = tmp_path_factory.mktemp("cub")
    classes = json.loads(
        resources.files("tf_deepemd.data").joinpath("splits", "cub", "val.json").read_text()
    )
    for position, name in enumerate(classes):
        folder = root / "CUB_200_2011" / "images" / name
        for i in range(3):
            write_image(str(folder / f"{name}_{i}.jpg"), class_colour(position % 13), (16, 16))
    return str(root)


@pytest.fixture(scope="session")
def cifar_python_dirs(tmp_path_factory):
    """(folder holding cifar-100-python.tar.gz, folder holding cifar-100-python/)."""
    parts = fake_cifar_arrays()
    extracted = tmp_path_factory.mktemp("cifar_extracted")
    folder = extracted / "cifar-100-python"
    folder.mkdir()
    for name, content in parts.items():
        with open(folder / name, "wb") as stream:
            pickle.dump(content, stream, protocol=2)
    archived = tmp_path_factory.mktemp("cifar_archive")
    with tarfile.open(archived / "cifar-100-python.tar.gz", "w:gz") as archive:
        archive.add(folder, arcname="cifar-100-python")
    return str(archived), str(extracted)


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory):
    """Cache folder for the small demo variant, shared by the tests."""
    return str(tmp_path_factory.mktemp("demo_cache"))
