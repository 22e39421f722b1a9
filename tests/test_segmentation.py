"""Cellpose wrappers: offline model lookup, training planes, scoring, and a real train + segment."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from gradcamo import segmentation as seg
from gradcamo.errors import InputError
from scipy import ndimage as ndi


def touching_cells(shape=(8, 64, 64), n_cells=8, radius=(3.0, 8.0, 8.0), seed=0):
    """Synthetic site: touching ellipsoidal cells (territories split where they meet).

    Returns a ``(Z, 5, Y, X)`` uint16 z-stack (channel 3 cytoplasm with dark cell borders,
    channel 0 nuclei) and its ``(Z, Y, X)`` ground-truth labels.
    """
    rng = np.random.default_rng(seed)
    centres = []
    while len(centres) < n_cells:
        c = np.array(
            [
                rng.uniform(radius[0], shape[0] - radius[0]),
                *rng.uniform(radius[1], np.array(shape[1:]) - radius[1]),
            ]
        )
        if all(np.hypot(*(c[1:] - d[1:])) > 1.5 * radius[1] for d in centres):
            centres.append(c)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), axis=-1)
    dist = np.stack([((((grid - c) / np.array(radius)) ** 2).sum(-1)) for c in centres])
    labels = np.where(dist.min(0) <= 1.0, dist.argmin(0) + 1, 0).astype(np.int32)
    nuclei = (dist.min(0) <= 0.25).astype(np.float32)
    borders = ndi.morphological_gradient(labels, size=(1, 3, 3)) > 0
    cytoplasm = (labels > 0) * 1.0 - 0.6 * borders
    image = np.zeros((shape[0], 5, *shape[1:]), np.float32)
    image[:, 3] = cytoplasm
    image[:, 0] = nuclei + 0.1 * (labels > 0)
    image = ndi.gaussian_filter(image, sigma=(0.7, 0, 1.0, 1.0))
    image = 200 + 3000 * image + rng.normal(0, 60, image.shape)
    return np.clip(image, 0, 65535).astype(np.uint16), labels


# ------------------------------------------------------------------------ model lookup


def test_missing_builtin_weights_fail_at_once_saying_what_to_put_where(tmp_path):
    with pytest.raises(InputError) as err:
        seg.resolve_model("cyto3", folder=tmp_path)
    message = str(err.value)
    assert "'cyto3'" in message and str(tmp_path) in message and "CELLPOSE_LOCAL_MODELS_PATH" in message
    assert not any(tmp_path.iterdir())  # nothing downloaded


@pytest.mark.parametrize(
    "name, filename",
    [
        ("cyto3", "cyto3"),
        ("nuclei", "nucleitorch_0"),
        ("cyto2", "cyto2torch_0"),
        ("tissuenet_cp3", "tissuenet_cp3"),
    ],
)
def test_builtin_names_map_to_cellpose_file_names(tmp_path, name, filename):
    with pytest.raises(InputError, match=filename):
        seg.resolve_model(name, folder=tmp_path)
    (tmp_path / filename).write_bytes(b"weights")
    source = seg.resolve_model(name, folder=tmp_path)
    assert source.builtin and source.weights == tmp_path / filename


def test_model_folder_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLPOSE_LOCAL_MODELS_PATH", str(tmp_path))
    assert seg.model_dir() == tmp_path
    with pytest.raises(InputError, match=str(tmp_path)):
        seg.resolve_model("nuclei")


def test_custom_model_path_and_unknown_names(tmp_path):
    path = tmp_path / "my_model"
    path.write_bytes(b"weights")
    source = seg.resolve_model(str(path))
    assert not source.builtin and source.weights == path
    with pytest.raises(InputError, match="neither an existing model file nor a Cellpose built-in"):
        seg.resolve_model(str(tmp_path / "missing_model"), folder=tmp_path)


# ----------------------------------------------------------------- inputs and planes


def test_cellpose_input_picks_cytoplasm_then_nucleus():
    stack = np.arange(2 * 5 * 3 * 4).reshape(2, 5, 3, 4).astype(np.uint16)
    x = seg.cellpose_input(stack, (3, 0))
    assert x.shape == (2, 2, 3, 4) and x.dtype == np.float32
    np.testing.assert_array_equal(x[:, 0], stack[:, 3])
    np.testing.assert_array_equal(x[:, 1], stack[:, 0])
    x = seg.cellpose_input(stack, (1, None))
    np.testing.assert_array_equal(x[:, 0], stack[:, 1])
    assert not x[:, 1].any()


def test_training_planes_are_evenly_spread_over_planes_with_cells():
    labels = np.zeros((12, 8, 8), np.int32)
    labels[2:10, 2:5, 2:5] = 1
    np.testing.assert_array_equal(seg.select_training_planes(labels, 4), [2, 4, 7, 9])
    np.testing.assert_array_equal(seg.select_training_planes(labels, 20), np.arange(2, 10))
    assert seg.select_training_planes(np.zeros((3, 4, 4), int), 2).size == 0


def test_training_planes_are_normalised_like_the_stack():
    image, labels = touching_cells()
    planes, masks = seg.training_planes(image, labels, (3, 0), 3)
    assert len(planes) == len(masks) == 3
    assert planes[0].shape == (2, 64, 64) and planes[0].dtype == np.float32
    stack = np.stack(planes)
    assert -0.5 < stack.min() < 0.1 and 0.9 < np.percentile(stack[:, 0], 99) < 1.5
    for plane, mask in zip(planes, masks):
        assert mask.max() > 0


def test_segment_rejects_bad_mode_and_unstitched_planes():
    image, _ = touching_cells()
    with pytest.raises(InputError, match="segmentation.mode"):
        seg.segment_zstack(None, image, (3, 0), mode="2d")
    with pytest.raises(InputError, match="stitch_threshold"):
        seg.segment_zstack(None, image, (3, 0), mode="stitch", stitch_threshold=0.0)


# ---------------------------------------------------------------------------- scoring


def test_score_counts_matches_misses_and_inventions():
    truth = np.zeros((2, 20, 20), np.int32)
    truth[:, 2:8, 2:8] = 1
    truth[:, 10:16, 10:16] = 2
    truth[:, 2:6, 12:18] = 3
    perfect = seg.score_site(truth, truth * 5)  # label values need not agree
    assert perfect == dict(n_true=3, n_pred=3, tp=3, fp=0, fn=0, ap=1.0, f1=1.0)

    pred = truth.copy()
    pred[truth == 3] = 0  # missed
    pred[:, 17:20, 0:3] = 9  # invented
    pred[:, 10:16, 10:12] = 0  # cell 2 loses a third: IoU 0.67, still a match
    score = seg.score_site(truth, pred)
    assert (score["tp"], score["fp"], score["fn"]) == (2, 1, 1)
    assert score["ap"] == pytest.approx(2 / 4) and score["f1"] == pytest.approx(4 / 6)

    split = truth.copy()
    split[:, 2:8, 4:6] = 7  # cell 1 cut in thirds: no third reaches IoU 0.5
    split[:, 2:8, 6:8] = 8
    score = seg.score_site(truth, split)
    assert (score["tp"], score["fp"], score["fn"]) == (2, 3, 1)


def test_score_of_empty_sites():
    empty = np.zeros((2, 5, 5), np.int32)
    assert seg.score_site(empty, empty)["ap"] == 1.0
    one = empty.copy()
    one[0, 1:3, 1:3] = 1
    assert seg.score_site(empty, one) == dict(n_true=0, n_pred=1, tp=0, fp=1, fn=0, ap=0.0, f1=0.0)


def test_summary_separates_held_out_sites():
    scores = pd.DataFrame(
        {
            "used_for_training": [True, False, False],
            "ap50": [1.0, 0.5, 0.7],
            "f1": [1.0, 0.6, 0.8],
            "tp": [10, 5, 7],
            "fp": [0, 3, 1],
            "fn": [0, 2, 2],
        }
    )
    summary = seg.summarize_scores(scores)
    assert summary["held_out"]["n_sites"] == 2 and summary["all"]["n_sites"] == 3
    assert summary["held_out"]["ap50"] == pytest.approx(0.6)
    assert summary["held_out"]["f1"] == pytest.approx(0.7)
    assert summary["held_out"]["pooled_f1"] == pytest.approx(24 / (24 + 4 + 4))
    assert summary["all"]["ap50"] == pytest.approx(2.2 / 3)


# ------------------------------------------------------------- real Cellpose training


@pytest.fixture(scope="module")
def trained_model(tmp_path_factory):
    """A CPnet trained from random weights on 4 planes of one synthetic site (~30 s CPU)."""
    import torch

    # One thread: on a shared 2-core machine a second OpenMP thread mostly waits (10x slower).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    image, labels = touching_cells(seed=0)
    planes, masks = seg.training_planes(image, labels, (3, 0), 4)
    path = tmp_path_factory.mktemp("cellpose") / "cellpose_model"
    summary = seg.train_model(planes, masks, path, epochs=80, learning_rate=0.02, batch_size=4, seed=0)
    yield path, summary
    torch.set_num_threads(threads)


def test_trained_model_segments_a_new_site(trained_model):
    path, summary = trained_model
    assert path.is_file() and summary["n_images"] == 4
    assert 8 < summary["diam_mean"] < 16  # trained at the cells' own scale
    model = seg.load_model(seg.resolve_model(str(path)))
    image, truth = touching_cells(seed=3)  # not seen in training
    labels = seg.segment_zstack(
        model, image, (3, 0), mode="stitch", flow_threshold=0.0, stitch_threshold=0.25, min_size=20
    )
    assert labels.shape == truth.shape and labels.dtype == np.int32
    np.testing.assert_array_equal(np.unique(labels), np.arange(labels.max() + 1))  # 0..N
    assert seg.score_site(truth, labels)["ap"] >= 0.6

    labels_3d = seg.segment_zstack(model, image, (3, 0), mode="3d", anisotropy=1.5, min_size=20)
    assert labels_3d.shape == truth.shape and labels_3d.max() > 0

    single_plane = seg.segment_zstack(model, image[4:5], (3, 0), flow_threshold=0.0, min_size=20)
    assert single_plane.shape == (1, 64, 64) and single_plane.max() > 0

    blank = np.full_like(image, 150)  # a blank field: empty labels, no error
    labels = seg.segment_zstack(model, blank, (3, 0), flow_threshold=0.0, min_size=20)
    assert labels.shape == truth.shape and labels.max() == 0


def test_a_model_from_random_weights_works_at_the_scale_it_is_given(tmp_path):
    """segmentation.train.diam_mean: the network works at that diameter and trains on
    patches of the images as resampled to it (a quarter of the side at a quarter the size)."""
    image, labels = touching_cells(seed=0)
    planes, masks = seg.training_planes(image, labels, (3, 0), 2)
    own = seg.train_model(planes, masks, tmp_path / "own", epochs=1, batch_size=2, seed=0)
    small = seg.train_model(
        planes, masks, tmp_path / "small", epochs=1, batch_size=2, seed=0, diam_mean=own["diam_mean"] / 4
    )
    assert small["diam_mean"] == pytest.approx(own["diam_mean"] / 4)
    assert small["diam_labels"] == pytest.approx(own["diam_labels"], rel=1e-3)
    assert own["tile"] == 64 and small["tile"] == 16
    model = seg.load_model(seg.resolve_model(str(tmp_path / "small")))
    assert float(model.net.diam_mean) == pytest.approx(own["diam_mean"] / 4)
