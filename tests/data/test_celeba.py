"""CelebA: parsers, folder and parquet readers on the procedural twin, the twin's drawing, pairs."""

from __future__ import annotations

import importlib.util
import io
import itertools
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from datamodules.celeba import (  # noqa: E402
    CELEBA_ATTRIBUTES,
    DEFAULT_PAIR_ATTRIBUTES,
    AttributePairIndex,
    celeba_space,
    parse_attr_file,
    parse_partition_file,
    preprocess_face,
    read_celeba_folder,
    read_celeba_parquet,
)
from datamodules.celeba.twin import (  # noqa: E402
    face_layout,
    render_face,
    sample_attributes,
    twin_identity_seed,
    write_celeba_twin,
)
from datamodules.factors import ActionSpace  # noqa: E402

HAS_DATASETS = importlib.util.find_spec("datasets") is not None
NO_DATASETS = "the Hugging Face 'datasets' package is not installed; read_celeba_parquet needs it"
A = {name: i for i, name in enumerate(CELEBA_ATTRIBUTES)}
TWIN_N, TWIN_SEED = 300, 3


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    root = tmp_path_factory.mktemp("twin")
    return write_celeba_twin(root, num_images=TWIN_N, seed=TWIN_SEED)


@pytest.fixture()
def small_twin(tmp_path):
    return write_celeba_twin(tmp_path / "data", num_images=20, seed=1, write_parquet=False)


# ------------------------------------------------------------------------------------------------
# names and the factor space
# ------------------------------------------------------------------------------------------------
def test_attribute_names_and_space():
    assert len(CELEBA_ATTRIBUTES) == 40 and len(set(CELEBA_ATTRIBUTES)) == 40
    assert CELEBA_ATTRIBUTES[0] == "5_o_Clock_Shadow" and CELEBA_ATTRIBUTES[31] == "Smiling"
    assert CELEBA_ATTRIBUTES[-1] == "Young"
    assert DEFAULT_PAIR_ATTRIBUTES == CELEBA_ATTRIBUTES[:10]
    space = celeba_space(["Smiling", "Eyeglasses"])
    assert space.name == "celeba" and space.names == ("Smiling", "Eyeglasses")
    assert all(f.size == 2 and f.values == (0.0, 1.0) and not f.cyclic for f in space.factors)
    actions = ActionSpace(space)
    assert actions.names == ("Smiling-", "Smiling+", "Eyeglasses-", "Eyeglasses+")
    assert len(ActionSpace(celeba_space(DEFAULT_PAIR_ATTRIBUTES))) == 20
    with pytest.raises(ValueError, match="Smilling.*5_o_Clock_Shadow"):
        celeba_space(["Smilling"])


# ------------------------------------------------------------------------------------------------
# text parsers
# ------------------------------------------------------------------------------------------------
def _attr_text(bits: np.ndarray, newline: str = "\n", tabs: bool = False) -> str:
    head = [str(len(bits)), " ".join(CELEBA_ATTRIBUTES) + " "]
    rows = []
    for i, row in enumerate(bits):
        sep = "\t" if tabs and i % 2 else ""
        fields = "".join(f"{sep} {1 if v else -1:2d}" for v in row)  # " -1" and "  1"
        rows.append(f"{i + 1:06d}.jpg{fields}" + ("  " if i % 3 == 0 else ""))  # some trailing blanks
    return newline.join(head + rows) + newline


@pytest.mark.parametrize("newline,tabs", [("\n", False), ("\r\n", False), ("\r\n", True)])
def test_parse_attr_file_separators_and_line_ends(tmp_path, newline, tabs):
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2, (7, 40)).astype(np.uint8)
    path = tmp_path / "list_attr_celeba.txt"
    path.write_bytes((_attr_text(bits, newline, tabs) + newline + "   " + newline).encode())  # blank tail
    files, names, parsed = parse_attr_file(path)
    assert files == [f"{i:06d}.jpg" for i in range(1, 8)]
    assert names == list(CELEBA_ATTRIBUTES)
    assert parsed.dtype in (np.uint8, np.int8) and parsed.shape == (7, 40)
    np.testing.assert_array_equal(parsed, bits)


def test_parse_attr_file_hand_written(tmp_path):
    path = tmp_path / "attr.txt"
    path.write_bytes(b"2\r\nA B  C\r\n000001.jpg -1  1\t-1 \r\n000002.jpg\t\t1 -1  1\r\n\r\n")
    files, names, bits = parse_attr_file(path)
    assert files == ["000001.jpg", "000002.jpg"] and names == ["A", "B", "C"]
    np.testing.assert_array_equal(bits, [[0, 1, 0], [1, 0, 1]])


@pytest.mark.parametrize(
    "text,line",
    [
        ("3\nA B C\n1.jpg -1 1 1\n2.jpg 1 1 1\n", 1),  # count says 3, two rows
        ("2\nA B C\n1.jpg -1 1 1\n2.jpg 1 0 1\n", 4),  # 0 is not -1/1
        ("2\nA B C\n1.jpg -1 1\n2.jpg 1 1 1\n", 3),  # too few fields
        ("2\nA B C\n1.jpg -1 1 1\n2.jpg 1 1 1 1\n", 4),  # too many fields
        ("2\n1.jpg -1 1 1\n2.jpg 1 1 1\n", 2),  # header missing
        ("A B C\n1.jpg -1 1 1\n", 1),  # count line missing
        ("2\r\nA B C\r\n1.jpg -1 1 1\r\n2.jpg 1 yes 1\r\n", 4),  # CRLF does not shift line numbers
    ],
)
def test_parse_attr_file_malformed(tmp_path, text, line):
    path = tmp_path / "list_attr_celeba.txt"
    path.write_bytes(text.encode())
    with pytest.raises(ValueError, match=rf"list_attr_celeba\.txt, line {line}\b"):
        parse_attr_file(path)


def test_parse_partition_file(tmp_path):
    path = tmp_path / "list_eval_partition.txt"
    path.write_bytes(b"000001.jpg 0\r\n000002.jpg\t1\r\n000003.jpg   2  \r\n\r\n")
    assert parse_partition_file(path) == {"000001.jpg": 0, "000002.jpg": 1, "000003.jpg": 2}
    bad = [("a.jpg 0\nb.jpg 3\n", 2), ("a.jpg 0 1\n", 1), ("a.jpg 0\n\nb.jpg\n", 3), ("a.jpg 0\na.jpg 1\n", 2)]
    for text, line in bad:
        path.write_text(text)
        with pytest.raises(ValueError, match=rf"line {line}\b"):
            parse_partition_file(path)
    path.write_text("\n\n")
    with pytest.raises(ValueError, match="empty"):
        parse_partition_file(path)


# ------------------------------------------------------------------------------------------------
# preprocessing
# ------------------------------------------------------------------------------------------------
def _framed(width: int, height: int, side: int) -> Image.Image:
    """Red image with a blue centred square of the given side."""
    arr = np.zeros((height, width, 3), np.uint8)
    arr[..., 0] = 255
    top, left = (height - side) // 2, (width - side) // 2
    arr[top:top + side, left:left + side] = (0, 0, 255)
    return Image.fromarray(arr)


def test_preprocess_crops_the_centred_square():
    out = preprocess_face(_framed(178, 218, 140))  # exactly the 140 x 140 crop at (19, 39)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert (out == (0, 0, 255)).all()
    # A 2x copy of an aligned image is framed the same way (side 280).
    out2 = preprocess_face(_framed(356, 436, 280))
    assert (out2 == (0, 0, 255)).all()
    # One pixel more of red on every side of the crop would show up in the border of the output.
    assert (preprocess_face(_framed(178, 218, 138))[0, 0] != (0, 0, 255)).any()


def test_preprocess_other_sizes_and_modes():
    face = render_face(sample_attributes(1, 0)[0], twin_identity_seed(0, 0))
    ref = preprocess_face(face).astype(int)
    big = preprocess_face(face.resize((356, 436), Image.Resampling.BICUBIC)).astype(int)
    assert np.abs(big - ref).mean() < 6  # same framing at another size
    small = preprocess_face(Image.new("RGB", (100, 80), (10, 20, 30)))  # crop side min(79, 80)
    assert small.shape == (64, 64, 3) and (small == (10, 20, 30)).all()
    gray = preprocess_face(face.convert("L"))
    assert gray.shape == (64, 64, 3) and gray.dtype == np.uint8
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    rgba = preprocess_face(face.convert("RGBA"))
    np.testing.assert_array_equal(rgba, ref)
    pal = preprocess_face(face.convert("P"))
    assert pal.shape == (64, 64, 3)


# ------------------------------------------------------------------------------------------------
# the twin and the folder reader
# ------------------------------------------------------------------------------------------------
def test_twin_layout(twin):
    base = twin / "celeba"
    assert sorted(p.name for p in base.iterdir()) == [
        "identity_CelebA.txt", "img_align_celeba", "list_attr_celeba.txt", "list_bbox_celeba.txt",
        "list_eval_partition.txt", "list_landmarks_align_celeba.txt",
    ]
    assert len(list((base / "img_align_celeba").iterdir())) == TWIN_N
    with Image.open(base / "img_align_celeba" / "000001.jpg") as im:
        assert im.size == (178, 218) and im.format == "JPEG"
    lines = (base / "list_attr_celeba.txt").read_text().split("\n")
    assert lines[0] == str(TWIN_N) and lines[1].split() == list(CELEBA_ATTRIBUTES)
    assert lines[2].startswith("000001.jpg ") and ("  1" in lines[2] or " -1 -1" in lines[2])
    for name in ("list_bbox_celeba.txt", "list_landmarks_align_celeba.txt"):
        text = (base / name).read_text().split("\n")
        assert text[0] == str(TWIN_N) and len(text[2].split()) == (5 if "bbox" in name else 11)
    assert (base / "identity_CelebA.txt").read_text().split("\n")[0].split() == ["000001.jpg", "1"]
    assert (twin / "celeba_twin.parquet").is_file()
    assert not [p for p in twin.iterdir() if p.name.startswith(".")]  # no temp folder left


def test_twin_attribute_consistency():
    bits = sample_attributes(4000, seed=5).astype(bool)
    hair = bits[:, [A["Black_Hair"], A["Blond_Hair"], A["Brown_Hair"], A["Gray_Hair"]]]
    assert hair.sum(1).max() == 1
    bald = bits[:, A["Bald"]]
    assert 0 < bald.sum() and not (bald & (hair.any(1) | bits[:, A["Bangs"]])).any()
    assert not (bits[:, A["Straight_Hair"]] & bits[:, A["Wavy_Hair"]]).any()
    female = ~bits[:, A["Male"]]
    assert bits[female, A["No_Beard"]].all()
    assert not bits[female][:, [A["Goatee"], A["Mustache"], A["5_o_Clock_Shadow"]]].any()
    assert 0.4 < bits[:, A["Smiling"]].mean() < 0.56 and 0.36 < bits[:, A["Male"]].mean() < 0.48
    np.testing.assert_array_equal(sample_attributes(50, 5), sample_attributes(4000, 5)[:50])


@pytest.mark.parametrize(
    "split,size,start", [("train", 240, 0), ("valid", 30, 240), ("test", 30, 270), ("all", 300, 0)]
)
def test_read_folder_splits(twin, tmp_path, split, size, start):
    src = read_celeba_folder(twin, split, cache_root=tmp_path)
    assert len(src) == size and src.description == f"CelebA folder {twin} ({split})"
    assert src.images.shape == (size, 64, 64, 3) and src.images.dtype == np.uint8
    assert src.labels.shape == (size, 40) and src.labels.dtype == np.int64
    expected = sample_attributes(TWIN_N, TWIN_SEED)[start:start + size]
    np.testing.assert_array_equal(src.labels, expected)
    # Row 0 is the preprocessed JPEG of the split's first file.
    with Image.open(twin / "celeba" / "img_align_celeba" / f"{start + 1:06d}.jpg") as im:
        np.testing.assert_array_equal(src.images[0], preprocess_face(im))
    assert src.fetch(np.array([1, 0])).shape == (2, 64, 64, 3)
    caches = [p for p in tmp_path.iterdir() if p.name.startswith(f"celeba-{split}-")]
    assert len(caches) == 1
    again = read_celeba_folder(twin, split, cache_root=tmp_path)  # from the cache
    np.testing.assert_array_equal(again.images, src.images)


def test_twin_is_deterministic(tmp_path):
    a = write_celeba_twin(tmp_path / "a", num_images=12, seed=9, write_parquet=False)
    b = write_celeba_twin(tmp_path / "b", num_images=12, seed=9, write_parquet=False)
    for name in ("list_attr_celeba.txt", "list_eval_partition.txt", "img_align_celeba/000007.jpg"):
        assert (a / "celeba" / name).read_bytes() == (b / "celeba" / name).read_bytes()
    with pytest.raises(FileExistsError):
        write_celeba_twin(tmp_path / "a", num_images=12, seed=9, write_parquet=False)
    write_celeba_twin(tmp_path / "a", num_images=5, seed=1, write_parquet=False, overwrite=True)
    assert len(list((a / "celeba" / "img_align_celeba").iterdir())) == 5


def test_folder_errors(small_twin, tmp_path):
    cache = tmp_path / "cache"
    img_dir = small_twin / "celeba" / "img_align_celeba"
    (img_dir / "000003.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="000003.jpg"):
        read_celeba_folder(small_twin, "train", cache_root=cache)
    read_celeba_folder(small_twin, "test", cache_root=cache)  # the test split does not need 000003.jpg
    for p in img_dir.iterdir():
        p.unlink()
    with pytest.raises(FileNotFoundError, match="empty"):
        read_celeba_folder(small_twin, "valid", cache_root=cache)
    shutil.rmtree(img_dir)
    with pytest.raises(FileNotFoundError, match="img_align_celeba"):
        read_celeba_folder(small_twin, "valid", cache_root=cache)
    img_dir.mkdir()
    (small_twin / "celeba" / "list_attr_celeba.txt").unlink()
    with pytest.raises(FileNotFoundError, match="list_attr_celeba.txt"):
        read_celeba_folder(small_twin, "all", cache_root=cache)
    with pytest.raises(FileNotFoundError, match="pass its parent"):
        read_celeba_folder(small_twin / "celeba", "all", cache_root=cache)
    with pytest.raises(FileNotFoundError, match="no 'celeba' folder"):
        read_celeba_folder(tmp_path / "nowhere", "all", cache_root=cache)
    with pytest.raises(ValueError, match="split"):
        read_celeba_folder(small_twin, "validation", cache_root=cache)
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # failed builds leave nothing


def test_folder_missing_partition_and_bad_attr(small_twin, tmp_path):
    (small_twin / "celeba" / "list_eval_partition.txt").unlink()
    with pytest.raises(FileNotFoundError, match="list_eval_partition.txt"):
        read_celeba_folder(small_twin, "train", cache_root=tmp_path)
    assert len(read_celeba_folder(small_twin, "all", cache_root=tmp_path)) == 20
    attr = small_twin / "celeba" / "list_attr_celeba.txt"
    lines = attr.read_text().split("\n")
    lines[6] = lines[6][:-2] + " 2"
    attr.write_text("\n".join(lines))
    with pytest.raises(ValueError, match="line 7"):
        read_celeba_folder(small_twin, "all", cache_root=tmp_path)


# ------------------------------------------------------------------------------------------------
# parquet
# ------------------------------------------------------------------------------------------------
@pytest.mark.skipif(not HAS_DATASETS, reason=NO_DATASETS)
def test_read_parquet_matches_folder(twin, tmp_path):
    pq_src = read_celeba_parquet(twin / "celeba_twin.parquet", cache_root=tmp_path)
    folder = read_celeba_folder(twin, "all", cache_root=tmp_path)
    assert len(pq_src) == TWIN_N and pq_src.images.shape == (TWIN_N, 64, 64, 3)
    np.testing.assert_array_equal(pq_src.labels, folder.labels)
    np.testing.assert_array_equal(pq_src.images, folder.images)  # the same JPEG bytes
    split = read_celeba_parquet({"valid": str(twin / "celeba_twin.parquet")}, split="valid", cache_root=tmp_path)
    assert len(split) == TWIN_N


@pytest.mark.skipif(not HAS_DATASETS, reason=NO_DATASETS)
def test_training_data_from_a_folder_of_parquet_files_named_by_split(twin, tmp_path, monkeypatch):
    from datamodules.datamodule import build_datamodule

    monkeypatch.setenv("CAUSAL_VQVAE_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "hub"
    folder.mkdir()
    for name in ("train-00000-of-00001", "validation-00000-of-00001", "test-00000-of-00001"):
        shutil.copy(twin / "celeba_twin.parquet", folder / f"{name}.parquet")
    dm = build_datamodule("celeba", data_root=str(folder), mode="images", num_workers=0, val_length=4,
                          test_length=4)
    dm.prepare_data()
    dm.setup()
    assert dm.sample_batch("val", size=4)["image"].shape == (4, 3, 64, 64)
    single = build_datamodule("celeba", data_root=str(twin / "celeba_twin.parquet"), mode="images", num_workers=0)
    with pytest.raises(ValueError, match=r"the parquet files must say their split by name.*none is for train, "
                                         r"valid, test among celeba_twin\.parquet"):
        single.prepare_data()
        single.setup()
    (folder / "train-00000-of-00001.parquet").write_bytes(b"PAR1 not parquet PAR1")
    broken = build_datamodule("celeba", data_root=str(folder), mode="images", num_workers=0,
                              cache_root=str(tmp_path / "other_cache"))
    with pytest.raises(ValueError, match=r"cannot read the parquet file\(s\) .*train-00000-of-00001\.parquet: "
                                         r"\w+: .*download it again"):
        broken.prepare_data()
        broken.setup()


@pytest.mark.skipif(not HAS_DATASETS, reason=NO_DATASETS)
def test_read_parquet_columns(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(1)
    bits = rng.integers(0, 2, (6, 40)).astype(np.uint8)
    jpegs = []
    for i in range(6):
        buf = io.BytesIO()
        Image.new("RGB", (178, 218), (i * 40, 10, 200)).save(buf, format="PNG")
        jpegs.append(buf.getvalue())
    cols = {"img": pa.array(jpegs, pa.binary())}
    for j, name in enumerate(CELEBA_ATTRIBUTES):
        if name == "Smiling":
            cols["smiling"] = pa.array(np.where(bits[:, j] > 0, 1, -1).astype(np.int8))  # -1/1
        elif j % 2:
            cols[name] = pa.array(bits[:, j].astype(bool))  # bool
        else:
            cols[name] = pa.array(bits[:, j].astype(np.int64))  # 0/1
    path = tmp_path / "faces.parquet"
    pq.write_table(pa.table(cols), path)
    with pytest.raises(ValueError, match=r"(?s)'image'.*'Smiling'.*available columns.*'img'.*columns="):
        read_celeba_parquet(path, cache_root=tmp_path)
    src = read_celeba_parquet(path, columns={"image": "img", "Smiling": "smiling"}, cache_root=tmp_path)
    np.testing.assert_array_equal(src.labels, bits)
    assert (src.images[:, :, :, 2] == 200).all() and (src.images[3, :, :, 0] == 120).all()
    with pytest.raises(ValueError, match="unknown names"):
        read_celeba_parquet(path, columns={"picture": "img"}, cache_root=tmp_path)


def test_package_imports_without_datasets():
    # datasets is imported inside read_celeba_parquet only.
    import subprocess

    code = (
        "import sys; sys.modules['datasets'] = None; sys.path.insert(0, %r); "
        "import datamodules.celeba, datamodules.celeba.twin; print('ok')" % str(Path(__file__).resolve().parents[2])
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr


# ------------------------------------------------------------------------------------------------
# the drawing is caused by the bits
# ------------------------------------------------------------------------------------------------
def _changed_box(bits: np.ndarray, name: str, seed: int):
    b0 = bits.copy()
    b1 = bits.copy()
    b1[A[name]] ^= 1
    x0 = np.asarray(render_face(b0, seed)).astype(int)
    x1 = np.asarray(render_face(b1, seed)).astype(int)
    diff = np.abs(x0 - x1).sum(-1) > 0
    if not diff.any():
        return None, 0
    rows, cols = np.nonzero(diff.any(1))[0], np.nonzero(diff.any(0))[0]
    return (int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])), int(diff.sum())


def test_toggling_smiling_and_eyeglasses_is_local():
    bits = sample_attributes(40, seed=11)
    bits[:, A["Blurry"]] = 0
    for i in range(40):
        seed = twin_identity_seed(11, i)
        lay = face_layout(seed)
        box, n = _changed_box(bits[i], "Smiling", seed)
        assert n > 30
        x0, y0, x1, y1 = box
        assert lay["cx"] - lay["mouth_w"] - 5 <= x0 and x1 <= lay["cx"] + lay["mouth_w"] + 5
        assert lay["mouth_y"] - 8 <= y0 and y1 <= lay["mouth_y"] + 13
        assert y0 > lay["eye_y"] + 25  # nothing near the eyes or the hair moves
        box, n = _changed_box(bits[i], "Eyeglasses", seed)
        assert n > 100
        x0, y0, x1, y1 = box
        assert lay["eye_y"] - 9 <= y0 and y1 <= lay["eye_y"] + 9
        assert lay["face_left"] - 8 <= x0 and x1 <= lay["face_right"] + 8
        assert x1 - x0 > 2 * lay["eye_dx"] + 10  # both lenses and the bridge


def test_each_drawn_attribute_changes_the_face():
    base = np.zeros(40, np.uint8)
    base[A["Young"]] = base[A["No_Beard"]] = 1
    seed = twin_identity_seed(0, 123)
    names = list(CELEBA_ATTRIBUTES[:10]) + [
        "Smiling", "Eyeglasses", "Wearing_Hat", "Pale_Skin", "Brown_Hair", "Gray_Hair", "Mustache",
        "Bangs", "Wavy_Hair", "Straight_Hair", "Mouth_Slightly_Open", "Big_Lips", "Goatee", "Blurry",
    ]
    for name in names:
        bits = base.copy()
        if name in ("5_o_Clock_Shadow", "Mustache", "Goatee"):
            bits[A["Male"]] = 1
        _, n = _changed_box(bits, name, seed)
        assert n >= 20, name
    beard = base.copy()
    beard[A["Male"]] = 1
    _, n = _changed_box(beard, "No_Beard", seed)
    assert n > 500
    beard[A["Male"]] = 0  # No_Beard draws nothing on a female face
    assert _changed_box(beard, "No_Beard", seed)[1] == 0
    a = np.asarray(render_face(base, seed))
    np.testing.assert_array_equal(a, np.asarray(render_face(base, seed)))
    assert not np.array_equal(a, np.asarray(render_face(base, twin_identity_seed(0, 124))))


# ------------------------------------------------------------------------------------------------
# pairs
# ------------------------------------------------------------------------------------------------
def _brute_counts(bits: np.ndarray, k: int) -> tuple[int, int]:
    plus = 0
    for i, j in itertools.product(range(len(bits)), repeat=2):
        d = bits[i] != bits[j]
        if d.sum() == 1 and d[k] and bits[i, k] == 0:
            plus += 1
    return plus, plus  # every minus pair is a plus pair reversed


def test_pair_counts_brute_force():
    rng = np.random.default_rng(7)
    all_names = ["Smiling", "Male", "Young", "Bald", "Bangs", "Eyeglasses"]
    full = rng.integers(0, 2, (70, 6)).astype(np.uint8)
    chosen = ["Smiling", "Young", "Eyeglasses", "Bald"]
    idx = AttributePairIndex(full, chosen, all_names)
    sub = full[:, [all_names.index(c) for c in chosen]]
    counts = idx.pair_counts()
    assert list(counts) == list(ActionSpace(celeba_space(chosen)).names)
    for k, name in enumerate(chosen):
        plus, minus = _brute_counts(sub, k)
        assert counts[f"{name}+"] == plus and counts[f"{name}-"] == minus
    assert sum(idx.pattern_counts().values()) == 70
    # The same bits given with only the chosen columns.
    assert AttributePairIndex(sub, chosen, all_names).pair_counts() == counts


def test_pair_sampling_is_valid_and_deterministic():
    rng = np.random.default_rng(3)
    bits = rng.integers(0, 2, (200, 40)).astype(np.uint8)
    bits[:, A["Bald"]] = 0  # a constant attribute: Bald- and Bald+ have no pair
    chosen = ["Smiling", "Bald", "Eyeglasses", "Male"]
    idx = AttributePairIndex(bits, chosen)
    actions = ActionSpace(celeba_space(chosen))
    assert idx.pair_counts()["Bald+"] == 0 and idx.pair_counts()["Bald-"] == 0
    src, act, tgt = idx.sample(2000, np.random.default_rng(0))
    assert src.shape == act.shape == tgt.shape == (2000,)
    sub = bits[:, [A[c] for c in chosen]]
    for s, a, t in zip(src, act, tgt):
        action = actions[int(a)]
        k, d = action.factor, action.direction
        assert sub[s, k] == (0 if d > 0 else 1) and sub[t, k] == (1 if d > 0 else 0)
        other = [j for j in range(len(chosen)) if j != k]
        assert (sub[s, other] == sub[t, other]).all()
    used = set(act.tolist())
    assert actions.parse("Bald+") not in used and actions.parse("Bald-") not in used
    assert used == {a.id for a in actions if a.factor_name != "Bald"}  # balanced: every other action
    again = idx.sample(2000, np.random.default_rng(0))
    for x, y in zip((src, act, tgt), again):
        np.testing.assert_array_equal(x, y)
    t1 = idx.sample(300, torch.Generator().manual_seed(5))
    t2 = idx.sample(300, torch.Generator().manual_seed(5))
    for x, y in zip(t1, t2):
        np.testing.assert_array_equal(x, y)
    only = idx.sample(100, np.random.default_rng(1), weights={"Smiling+": 1.0})[1]
    assert (only == actions.parse("Smiling+")).all()
    with pytest.raises(ValueError, match="no mass"):
        idx.sample(10, np.random.default_rng(1), weights={"Bald+": 1.0})


def test_pair_index_without_pairs():
    bits = np.zeros((10, 40), np.uint8)
    idx = AttributePairIndex(bits, ["Smiling"])
    assert idx.pair_counts() == {"Smiling-": 0, "Smiling+": 0}
    with pytest.raises(ValueError, match="no action has a pair"):
        idx.sample(5, np.random.default_rng(0))
    with pytest.raises(ValueError, match="0/1"):
        AttributePairIndex(np.full((3, 40), -1), ["Smiling"])


def test_pairs_on_the_twin(twin, tmp_path):
    src = read_celeba_folder(twin, "all", cache_root=tmp_path)
    idx = AttributePairIndex(np.asarray(src.labels))
    counts = idx.pair_counts()
    assert len(counts) == 20 and all(counts[f"{a}+"] == counts[f"{a}-"] for a in DEFAULT_PAIR_ATTRIBUTES)
    assert "Smiling+" not in counts and counts["Attractive+"] > 0
    s, a, t = idx.sample(64, np.random.default_rng(0))
    diff = (np.asarray(src.labels)[s][:, :10] != np.asarray(src.labels)[t][:, :10]).sum(1)
    assert (diff == 1).all()
