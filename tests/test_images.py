"""engine.images: folders, globs and arrays of images read as a generator's targets, or refused in one line."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.nn import functional as F

from engine.images import conform, open_images


def _png(path, values: np.ndarray) -> str:
    Image.fromarray(values).save(path)
    return str(path)


def test_a_folder_of_grey_and_colour_files_reads_in_name_order_at_the_generators_size(tmp_path):
    grey = np.zeros((16, 16), np.uint8)
    grey[:, 8:] = 255
    colour = np.zeros((32, 32, 3), np.uint8)
    colour[..., 0] = 255
    _png(tmp_path / "b.png", colour)
    _png(tmp_path / "a.png", grey)
    (tmp_path / "notes.txt").write_text("not an image")
    source = open_images(tmp_path)
    assert source.names == (str(tmp_path / "a.png"), str(tmp_path / "b.png"))
    images = source.read(slice(0, 2), 16, 1)
    assert images.shape == (2, 1, 16, 16) and images.dtype == np.float32
    np.testing.assert_array_equal(images[0, 0, :, :8], -1.0)       # 0 -> -1
    np.testing.assert_array_equal(images[0, 0, :, 8:], 1.0)        # 255 -> 1
    # Colour to grey is PIL's luma (R·299/1000): pure red is 76 of 255 everywhere after resizing a flat image.
    expected = np.asarray(Image.fromarray(colour).convert("L"), np.float32)[0, 0] / 127.5 - 1
    np.testing.assert_allclose(images[1], expected, atol=1e-2)
    rgb = source.read(slice(0, 1), 16, 3)
    assert rgb.shape == (1, 3, 16, 16) and np.array_equal(rgb[0, 0], rgb[0, 2])   # grey repeated per channel


def test_upsampling_matches_how_the_digits_models_were_trained():
    from sklearn.datasets import load_digits

    from engine.models.train_digits import load_digit_images

    eight = load_digits().images[:5].astype(np.float32) / 16.0 * 2.0 - 1.0
    reference = load_digit_images()[0][:5].numpy()
    ours = np.stack([conform(image[None], 16, 1) for image in eight])
    np.testing.assert_allclose(ours, reference, atol=1e-6)


def test_array_layouts_and_uint8_scale_read_alike(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (3, 12, 12, 3), dtype=np.uint8)
    np.save(tmp_path / "nhwc.npy", pixels)
    np.save(tmp_path / "nchw.npy", (pixels.transpose(0, 3, 1, 2) / 127.5 - 1).astype(np.float32))
    a = open_images(tmp_path / "nhwc.npy")
    b = open_images(tmp_path / "nchw.npy")
    assert a.names == ("nhwc.npy[0]", "nhwc.npy[1]", "nhwc.npy[2]") and a.layout == "nhwc" and b.layout == "nchw"
    np.testing.assert_allclose(a.read(slice(1, 3), 12, 3), b.read(slice(1, 3), 12, 3), atol=1e-6)
    np.save(tmp_path / "nhw.npy", pixels[..., 0])
    np.testing.assert_allclose(open_images(tmp_path / "nhw.npy").read(slice(0, 3), 12, 1)[:, 0],
                               pixels[..., 0] / 127.5 - 1, atol=1e-6)


def test_non_square_images_are_centre_cropped_then_resized():
    image = np.full((1, 8, 16), -1.0, np.float32)
    image[:, :, 4:12] = 1.0                      # the centre square is all 1
    np.testing.assert_array_equal(conform(image, 8, 1), np.ones((1, 8, 8), np.float32))
    big = np.random.default_rng(1).uniform(-1, 1, (3, 32, 32)).astype(np.float32)
    expected = F.interpolate(torch.from_numpy(big)[None], size=(16, 16), mode="bilinear", align_corners=False,
                             antialias=True)[0].numpy()
    np.testing.assert_allclose(conform(big, 16, 3), expected, atol=1e-6)


def test_a_glob_selects_its_files(tmp_path):
    for name in ("x1.png", "x2.png", "y.png"):
        _png(tmp_path / name, np.zeros((4, 4), np.uint8))
    assert [p.rsplit("/", 1)[1] for p in open_images(str(tmp_path / "x*.png")).names] == ["x1.png", "x2.png"]


@pytest.mark.parametrize("make, message", [
    (lambda d: str(d), "holds no PNG or JPEG files"),
    (lambda d: ((d / "bad.png").write_text("not a png"), str(d))[1], "cannot read"),
    (lambda d: np.save(d / "a.npy", np.zeros((2, 5, 16, 16), np.float32)) or str(d / "a.npy"), "got shape (2, 5, 16, 16)"),
    (lambda d: np.save(d / "a.npy", np.zeros((4, 16), np.float32)) or str(d / "a.npy"), "got shape (4, 16)"),
    (lambda d: np.save(d / "a.npy", np.full((1, 1, 4, 4), 3.0, np.float32)) or str(d / "a.npy"), "outside [-1, 1]"),
    (lambda d: str(d / "nothing*.png"), "no PNG or JPEG file matches"),
    (lambda d: str(d / "missing"), "does not exist"),
])
def test_bad_input_is_one_line_naming_it(tmp_path, make, message):
    spec = make(tmp_path)
    with pytest.raises(ValueError) as info:
        open_images(spec)
    text = str(info.value)
    assert message in text and "\n" not in text


def test_a_16_bit_grey_png_maps_0_to_65535_onto_the_generators_range(tmp_path):
    ramp = np.linspace(0, 65535, 16 * 16).round().astype(np.uint16).reshape(16, 16)
    source = open_images(_png(tmp_path / "ramp16.png", ramp))
    image = source.read(slice(0, 1), 16, 1)[0, 0]
    np.testing.assert_allclose(image, ramp / 65535.0 * 2 - 1, atol=1e-6)   # scaled, not clipped to 255
    assert image.min() == -1.0 and image.max() == 1.0


@pytest.mark.parametrize("mode, values", [("F", np.full((8, 8), 0.5, np.float32)),
                                          ("I", np.full((8, 8), 70000, np.int32))])
def test_files_of_floats_or_32_bit_integers_are_refused_in_one_line_naming_the_mode(tmp_path, mode, values):
    path = tmp_path / "deep.png"                      # a TIFF under a PNG name: PIL opens it by its content
    Image.fromarray(values, mode).save(path, format="TIFF")
    with pytest.raises(ValueError, match=rf"deep.png holds .*PIL mode {mode}\) with no declared range") as info:
        open_images(path)
    assert "\n" not in str(info.value)


def test_file_paths_are_read_from_absolute_paths_and_named_as_given(tmp_path, monkeypatch):
    (tmp_path / "in").mkdir()
    _png(tmp_path / "in" / "a.png", np.full((8, 8), 255, np.uint8))
    monkeypatch.chdir(tmp_path)
    source = open_images("in")
    assert source.names == (str(Path("in") / "a.png"),)
    assert source.files == (str(tmp_path / "in" / "a.png"),)
    monkeypatch.chdir("/")                            # a Dask worker started elsewhere reads the same file
    np.testing.assert_array_equal(source.read(slice(0, 1), 8, 1), 1.0)


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.int16, np.uint32])
def test_integer_arrays_of_0_to_255_read_like_uint8(tmp_path, dtype):
    pixels = np.random.default_rng(2).integers(0, 256, (2, 1, 8, 8), dtype=np.uint8)
    pixels[0, 0, 0, 0], pixels[1, 0, 0, 0] = 0, 255
    np.save(tmp_path / "u8.npy", pixels)
    np.save(tmp_path / "wide.npy", pixels.astype(dtype))
    expected = open_images(tmp_path / "u8.npy").read(slice(0, 2), 8, 1)
    source = open_images(tmp_path / "wide.npy")
    assert source.description["values"] == "uint8"
    np.testing.assert_array_equal(source.read(slice(0, 2), 8, 1), expected)
    np.save(tmp_path / "black.npy", np.zeros((1, 8, 8), dtype))
    np.testing.assert_array_equal(open_images(tmp_path / "black.npy").read(slice(0, 1), 8, 1), -1.0)


@pytest.mark.parametrize("top", [65535, 200])          # a dark 16-bit image is still 16-bit, as its PNG is
@pytest.mark.parametrize("order", ["<", ">"])
def test_a_uint16_array_maps_0_to_65535_like_a_16_bit_png(tmp_path, top, order):
    ramp = np.linspace(0, top, 16 * 16).round().astype(np.uint16).reshape(16, 16)
    np.save(tmp_path / "ramp16.npy", ramp[None].astype(f"{order}u2"))
    source = open_images(tmp_path / "ramp16.npy")
    assert source.description["values"] == "uint16"
    png = open_images(_png(tmp_path / "ramp16.png", ramp)).read(slice(0, 1), 16, 1)
    np.testing.assert_array_equal(source.read(slice(0, 1), 16, 1), png)


@pytest.mark.parametrize("make, message", [
    (lambda d: (d / "garbage.npy").write_text("x,y\n1,2\n"), "garbage.npy is not a .npy array (no NumPy header"),
    (lambda d: (d / "garbage.npy").write_bytes(b""), "garbage.npy is not a .npy array (an empty file"),
    (lambda d: np.savez(d / "garbage.npz", a=np.zeros((1, 8, 8))) or (d / "garbage.npz").rename(d / "garbage.npy"),
     "garbage.npy is not a .npy array (a .npz archive"),
    (lambda d: np.save(d / "garbage.npy", np.zeros((0, 16, 16), np.uint8)), "garbage.npy holds no images"),
    (lambda d: np.save(d / "garbage.npy", np.zeros((2, 1, 0, 16), np.uint8)), "got shape (2, 1, 0, 16)"),
    (lambda d: np.save(d / "garbage.npy", np.arange(-1, 255, dtype=np.int32).reshape(1, 16, 16)),
     "garbage.npy holds int32 values -1..254; integer images must lie in 0..255"),
    (lambda d: np.save(d / "garbage.npy", np.full((1, 4, 4), 256, np.int64)), "holds int64 values 256..256"),
    (lambda d: np.save(d / "garbage.npy", np.full((1, 4, 4), np.nan, np.float32)), "NaN or infinite values"),
    (lambda d: np.save(d / "garbage.npy", np.full((1, 4, 4), -2.5, np.float64)), "float64 values -2.5..-2.5, outside"),
])
def test_arrays_that_are_not_images_are_refused_in_one_line_naming_why(tmp_path, make, message):
    make(tmp_path)
    with pytest.raises(ValueError) as info:
        open_images(tmp_path / "garbage.npy")
    assert message in str(info.value) and "\n" not in str(info.value)
