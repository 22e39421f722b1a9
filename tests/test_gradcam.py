"""Grad-CAM profiler: agreement with MONAI's GradCAM, batch independence, Grad-CAMO cases."""

import copy
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gradcamo.attribution_methods import METHODS, smoothing_sigmas
from gradcamo.errors import InputError
from gradcamo.gradcam import (
    GradCamProfiler,
    attention_shares,
    gradcamo_score,
    layer_for_resolution,
    map_shapes,
    smooth_map,
    upsample_cam,
)
from gradcamo.model import build_model, embedding_dim
from monai.transforms import ScaleIntensity
from monai.visualize import GradCAM, GradCAMpp

CROP = (8, 64, 64)  # _conv_head is 1×2×2 here, _blocks.3 2×4×4, _blocks.1 2×16×16
N_CLASSES = 3
# Largest allowed difference between min-max normalised maps (values in [0, 1]).
PEER_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def model():
    """A b0 with non-trivial weights: a few SGD steps on random data, BN statistics refitted."""
    torch.manual_seed(0)
    net = build_model("b0", 5, N_CLASSES, CROP)
    x, y = torch.randn(6, 5, *CROP), torch.tensor([0, 1, 2, 0, 1, 2])
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    net.train()
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
    for bn in net.modules():
        if isinstance(bn, torch.nn.BatchNorm3d):
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average over the refit pass
    with torch.no_grad():
        net(x)
    return net.eval()


@pytest.fixture(scope="module")
def cells():
    return torch.randn(7, 5, *CROP, generator=torch.Generator().manual_seed(1))


def minmax(maps: torch.Tensor) -> torch.Tensor:
    """Per-map min-max normalisation to [0, 1] (MONAI's default_normalizer, not inverted)."""
    scale = ScaleIntensity(minv=0.0, maxv=1.0)
    return torch.stack([torch.as_tensor(scale(m)) for m in maps])


def monai_maps(model, layer, x, classes):
    """MONAI GradCAM, one call per cell (its batched call mixes the cells' target classes)."""
    cam = GradCAM(copy.deepcopy(model), target_layers=layer, postprocessing=minmax)
    return torch.cat([cam(x[i : i + 1], class_idx=int(k)) for i, k in enumerate(classes)])[:, 0]


def test_split_forward_reproduces_model_forward(model, cells):
    pooled = {}
    hook = model._avg_pooling.register_forward_hook(lambda m, i, o: pooled.update(out=o))
    with torch.no_grad():
        logits = model(cells)
    hook.remove()
    for layer in ["_conv_head", "_blocks.4", "_conv_stem"]:
        out = GradCamProfiler(model, layer)(cells)
        torch.testing.assert_close(out["logits"], logits)
        torch.testing.assert_close(out["embedding"], pooled["out"].flatten(1))
        assert out["embedding"].shape == (7, embedding_dim(model)) == (7, 1280)
        assert torch.equal(out["target"], logits.argmax(1))


@pytest.mark.parametrize(
    "layer", ["_conv_head", "_blocks.6", "_blocks.5", "_blocks.3", "_blocks.3.6", "_blocks.1.1"]
)
def test_matches_monai_gradcam(model, cells, layer):
    out = GradCamProfiler(model, layer)(cells)
    ours = minmax(upsample_cam(out["cam"], CROP))
    theirs = monai_maps(model, layer, cells, out["target"])
    assert ours.shape == theirs.shape == (7, *CROP)
    assert (ours.flatten(1).std(1) > 0.05).all(), "maps must vary for the comparison to mean something"
    assert (ours - theirs).abs().max() <= PEER_TOLERANCE


def test_matches_monai_for_a_given_class(model, cells):
    profiler = GradCamProfiler(model, "_blocks.3")
    predicted = profiler(cells)["target"]
    other = (predicted + 1) % N_CLASSES
    out = profiler(cells, other)
    assert torch.equal(out["target"], other)
    ours = minmax(upsample_cam(out["cam"], CROP))
    theirs = monai_maps(model, "_blocks.3", cells, other)
    assert (ours - theirs).abs().max() <= PEER_TOLERANCE


@pytest.mark.parametrize("layer", ["_conv_head", "_blocks.2"])
def test_cell_results_do_not_depend_on_the_batch(model, cells, layer):
    profiler = GradCamProfiler(model, layer)
    batch = profiler(cells)
    masks = (torch.rand(7, *CROP, generator=torch.Generator().manual_seed(2)) > 0.5).to(torch.uint8)
    batch_scores = gradcamo_score(upsample_cam(batch["cam"], CROP), masks)
    assert torch.isfinite(batch_scores).all()
    for i in range(len(cells)):
        single = profiler(cells[i : i + 1])
        for key in ("embedding", "logits", "cam"):
            torch.testing.assert_close(single[key][0], batch[key][i], rtol=1e-4, atol=1e-5)
        score = gradcamo_score(upsample_cam(single["cam"], CROP), masks[i : i + 1])
        torch.testing.assert_close(score[0], batch_scores[i], rtol=1e-5, atol=1e-6)


def test_target_layers_are_module_names_in_forward_order(model):
    layers = GradCamProfiler(model).target_layers
    modules = dict(model.named_modules())
    assert set(layers) <= set(modules)
    assert {"_conv_stem", "_blocks.0", "_blocks.1.1", "_blocks.1.2", "_blocks.6.15", "_conv_head"} <= set(
        layers
    )
    order = [name for name in modules if name in layers]
    assert [n for n in layers if n.count(".") != 1] == [n for n in order if n.count(".") != 1]


def test_unknown_target_layer_names_the_valid_ones(model):
    with pytest.raises(InputError, match=r"_blocks\.6\.0x.*_blocks\.6\.15.*_conv_head"):
        GradCamProfiler(model, "_blocks.6.0x")
    with pytest.raises(InputError, match="_fc"):
        GradCamProfiler(model, "_fc")


def test_profiler_refuses_inference_mode(model, cells):
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        GradCamProfiler(model)(cells[:1])


def test_upsample_cam_shape_and_range():
    cam = torch.rand(3, 1, 2, 2)
    up = upsample_cam(cam, (5, 9, 7))
    assert up.shape == (3, 5, 9, 7)
    assert up.min() >= cam.min() and up.max() <= cam.max()
    torch.testing.assert_close(
        upsample_cam(torch.full((1, 1, 1, 1), 2.0), (4, 6, 6)), torch.full((1, 4, 6, 6), 2.0)
    )


def _masks():
    mask = np.zeros((1, 4, 6, 6), np.uint8)
    mask[0, 1:3, 2:5, 1:4] = 1  # 18 of 144 voxels
    mask[0, 0, 0, :] = 2  # another cell counts as outside
    return mask


@pytest.mark.parametrize("as_tensor", [False, True])
def test_gradcamo_analytic_cases(as_tensor):
    mask = _masks()
    inside = (mask == 1).astype(np.float32) * np.linspace(0.1, 2, mask.size).reshape(mask.shape)
    outside = (mask != 1).astype(np.float32) * 3.0
    uniform = np.full(mask.shape, 0.7, np.float32)
    zero = np.zeros(mask.shape, np.float32)
    cams, masks = np.concatenate([inside, outside, uniform, zero]), np.repeat(mask, 4, axis=0)
    convert = torch.from_numpy if as_tensor else np.asarray
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(all="raise"):
            score = gradcamo_score(convert(cams), convert(masks))
    assert isinstance(score, torch.Tensor) == as_tensor
    score = np.asarray(score)
    assert score.shape == (4,)
    np.testing.assert_allclose(score[:3], [1.0, 0.0, 18 / 144], rtol=1e-12)
    assert np.isnan(score[3])


def test_attention_shares_split_each_map_into_cell_neighbours_background():
    mask = _masks()  # 18 voxels of the cell, 6 of another cell, 120 of background
    uniform = np.full(mask.shape, 0.7, np.float32)
    on_neighbour = (mask == 2).astype(np.float32)
    cams, masks = np.concatenate([uniform, on_neighbour]), np.repeat(mask, 2, axis=0)
    shares = attention_shares(cams, masks)
    np.testing.assert_allclose(shares["cell"], [18 / 144, 0.0], rtol=1e-12)
    np.testing.assert_allclose(shares["neighbours"], [6 / 144, 1.0], rtol=1e-12)
    np.testing.assert_allclose(shares["background"], [120 / 144, 0.0], rtol=1e-12)
    np.testing.assert_allclose(shares["cell"], gradcamo_score(cams, masks))


def test_gradcamo_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="mask"):
        gradcamo_score(np.zeros((2, 3, 4, 4)), np.zeros((2, 3, 4, 5)))


# ------------------------------------------------------------------ other attribution methods


def reference_layer_maps(model, layer, x, classes, formula):
    """Activations and gradients of ``layer`` from the full model with autograd hooks (the
    way pytorch-grad-cam gets them), one cell at a time, then ``formula(acts, grads)`` as
    pytorch-grad-cam's ``get_cam_image`` writes it (NumPy, (K, Z, Y, X) -> (Z, Y, X)), then
    its ReLU."""
    module = dict(model.named_modules())[layer]
    maps = []
    for i, k in enumerate(classes):
        store = {}
        handle = module.register_forward_hook(lambda m, inp, out: store.update(a=out))
        logits = model(x[i : i + 1])
        handle.remove()
        (grads,) = torch.autograd.grad(logits[0, int(k)], store["a"])
        acts, grads = store["a"][0].detach().numpy(), grads[0].numpy()
        maps.append(np.maximum(formula(acts, grads), 0))
    return torch.from_numpy(np.stack(maps))


PYTORCH_GRAD_CAM = {
    # pytorch_grad_cam/hirescam.py: elementwise_activations = grads * activations; sum(axis=1)
    "hirescam": lambda a, g: (g * a).sum(axis=0),
    # pytorch_grad_cam/layer_cam.py: np.maximum(grads, 0) * activations; sum(axis=1)
    "layercam": lambda a, g: (np.maximum(g, 0) * a).sum(axis=0),
}


@pytest.mark.parametrize("method", sorted(PYTORCH_GRAD_CAM))
@pytest.mark.parametrize("layer", ["_blocks.3", "_blocks.1.1"])
def test_hirescam_and_layercam_match_pytorch_grad_cam_formulas(model, cells, method, layer):
    out = GradCamProfiler(model, layer, method)(cells)
    theirs = reference_layer_maps(model, layer, cells, out["target"], PYTORCH_GRAD_CAM[method])
    assert out["cam"].shape == theirs.shape
    ours, theirs = minmax(upsample_cam(out["cam"], CROP)), minmax(upsample_cam(theirs.float(), CROP))
    assert (ours.flatten(1).std(1) > 0.02).all()
    assert (ours - theirs).abs().max() <= PEER_TOLERANCE


@pytest.mark.parametrize("layer", ["_blocks.3", "_blocks.1.1"])
def test_gradcampp_matches_monai(model, cells, layer):
    out = GradCamProfiler(model, layer, "gradcampp")(cells)
    ours = minmax(upsample_cam(out["cam"], CROP))
    cam = GradCAMpp(copy.deepcopy(model), target_layers=layer, postprocessing=minmax)
    theirs = torch.cat([cam(cells[i : i + 1], class_idx=int(k)) for i, k in enumerate(out["target"])])[:, 0]
    assert (ours.flatten(1).std(1) > 0.02).all()
    assert (ours - theirs).abs().max() <= PEER_TOLERANCE


def test_input_x_gradient_is_the_input_times_its_gradient(model, cells):
    out = GradCamProfiler(model, "_conv_head", "input_x_gradient")(cells[:3])
    assert out["cam"].shape == (3, *CROP)
    x = cells[:3].clone().requires_grad_(True)
    logits = model(x)
    (grad,) = torch.autograd.grad(logits.gather(1, out["target"][:, None]).sum(), x)
    torch.testing.assert_close(out["cam"], (x * grad).abs().sum(1).detach(), rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(out["logits"], logits.detach())


def test_integrated_gradients_is_the_path_integral_of_the_probability(model, cells):
    # The definition by hand (midpoint rule, probability of the target class), against
    # captum's IntegratedGradients inside the profiler; and completeness: with enough steps
    # the attributions add up to p(x) - p(baseline), the kind of drop the audit measures.
    x, baseline = cells[:3], torch.tensor([0.1, 0.05, 0.2, 0.0, 0.15])
    out = GradCamProfiler(model, method="integrated_gradients", baseline=baseline, steps=4)(x)
    plain = GradCamProfiler(model, method="input_x_gradient")(x)
    torch.testing.assert_close(out["logits"], plain["logits"])
    torch.testing.assert_close(out["embedding"], plain["embedding"])
    b = baseline[None, :, None, None, None].expand_as(x)
    total = torch.zeros_like(x)
    for k in range(4):
        point = (b + (k + 0.5) / 4 * (x - b)).requires_grad_(True)
        p = torch.softmax(model(point), 1).gather(1, out["target"][:, None]).sum()
        total += torch.autograd.grad(p, point)[0]
    by_hand = (x - b) * total / 4
    torch.testing.assert_close(out["cam"], torch.relu(by_hand.sum(1)), rtol=1e-4, atol=1e-9)
    assert (out["cam"].flatten(1).amax(1) > 0).all()
    fine = GradCamProfiler(model, method="integrated_gradients", baseline=baseline, steps=64)(x)
    with torch.no_grad():
        p = torch.softmax(model(torch.cat([x, b])), 1).gather(1, out["target"].repeat(2)[:, None])[:, 0]
    drop = (p[:3] - p[3:]).abs()
    assert (fine["completeness_gap"] <= 0.05 * drop + 1e-6).all(), (fine["completeness_gap"], drop)
    with pytest.raises(InputError, match="baseline"):
        GradCamProfiler(model, method="integrated_gradients")
    with pytest.raises(InputError, match="one value per channel"):
        GradCamProfiler(model, method="integrated_gradients", baseline=np.zeros(3))


def test_smoothing_happens_before_the_relu_of_integrated_gradients(model, cells):
    # The smoothed map is the ReLU of the smoothed *signed* attributions (noise of either
    # sign cancels), not a blur of the rectified map; input x gradient, unsigned, is blurred.
    x, baseline, sigmas = cells[:3], torch.tensor([0.1, 0.05, 0.2, 0.0, 0.15]), (0.65, 1.0, 1.0)
    smoothed = GradCamProfiler(
        model, method="integrated_gradients", baseline=baseline, steps=4, smoothing_sigma=sigmas
    )
    b = baseline[None, :, None, None, None].expand_as(x)
    signed = smoothed._integrated.attribute(
        x, baselines=b, target=smoothed(x)["target"], n_steps=4, method="riemann_middle"
    )
    expected = torch.relu(smooth_map(signed.detach().sum(1), sigmas))
    torch.testing.assert_close(smoothed(x)["cam"], expected, rtol=1e-4, atol=1e-9)
    assert not torch.allclose(expected, smooth_map(torch.relu(signed.detach().sum(1)), sigmas))
    plain = GradCamProfiler(model, method="input_x_gradient")(x)["cam"]
    blurred = GradCamProfiler(model, method="input_x_gradient", smoothing_sigma=sigmas)(x)["cam"]
    torch.testing.assert_close(blurred, smooth_map(plain, sigmas), rtol=1e-4, atol=1e-9)
    with pytest.raises(InputError, match="input-level"):
        GradCamProfiler(model, "_blocks.2", "layercam", smoothing_sigma=sigmas)


def test_smoothing_is_a_normalised_gaussian_of_the_same_width_in_micrometres():
    assert smoothing_sigmas(1.0, (1.0, 0.65, 0.65)) == pytest.approx((0.65, 1.0, 1.0))
    assert smoothing_sigmas(0.0, (1.0, 0.65, 0.65)) == (0.0, 0.0, 0.0)
    with pytest.raises(InputError, match="at least 0"):
        smoothing_sigmas(-1.0, (1.0, 0.65, 0.65))
    delta = torch.zeros(1, 9, 21, 21, dtype=torch.float64)
    delta[0, 4, 10, 10] = 1.0
    out = smooth_map(delta, (0.65, 1.0, 1.0))[0]
    assert out.sum().item() == pytest.approx(1.0, abs=1e-4)  # far from the borders: mass kept
    torch.testing.assert_close(out, out.flip(1).flip(2))  # symmetric in Y and X
    spread_y = (out.sum((0, 2)) * (torch.arange(21) - 10.0) ** 2).sum()
    spread_z = (out.sum((1, 2)) * (torch.arange(9) - 4.0) ** 2).sum()
    assert spread_y.item() == pytest.approx(1.0 + 1 / 12, rel=0.05)  # sigma² (+ the voxel's own width)
    assert spread_z.item() == pytest.approx(0.65**2 + 1 / 12, rel=0.05)
    assert smooth_map(delta, (0.0, 0.0, 0.0)) is delta
    # Mirrored at the faces: a constant map stays constant up to its edges (zero padding would
    # darken the faces, mostly background, and so raise every cell's share).
    constant = torch.ones(2, 12, 32, 32, dtype=torch.float64)
    torch.testing.assert_close(smooth_map(constant, (0.65, 1.0, 1.0)), constant, atol=2e-5, rtol=0)
    with pytest.raises(InputError, match="needs more than"):
        smooth_map(constant, (5.0, 5.0, 5.0))


def test_smoothing_lets_voxel_noise_cancel_and_keeps_a_cell_sized_signal():
    # Signed attributions: white noise everywhere plus a positive blob on the cell. The ReLU
    # of the raw map counts every noise voxel's positive half; smoothed first, the noise
    # averages out and the blob, wider than the kernel, stays.
    rng = np.random.default_rng(0)
    zz, yy, xx = np.mgrid[:12, :32, :32]
    cell = ((zz - 6) ** 2 / 9 + (yy - 16) ** 2 / 25 + (xx - 16) ** 2 / 25) <= 1
    signed = torch.from_numpy(0.5 * cell + rng.normal(0, 1.0, (4, 12, 32, 32)))
    masks = torch.from_numpy(np.broadcast_to(cell, signed.shape).astype(np.uint8))
    raw = gradcamo_score(torch.relu(signed), masks)
    smoothed = gradcamo_score(torch.relu(smooth_map(signed, (0.65, 1.0, 1.0))), masks)
    assert (smoothed > 2 * raw).all(), (raw, smoothed)


def test_every_method_gives_a_share_per_cell(model, cells):
    masks = (torch.rand(7, *CROP, generator=torch.Generator().manual_seed(3)) > 0.7).to(torch.uint8)
    for method in METHODS:
        out = GradCamProfiler(model, "_blocks.2", method, baseline=np.full(5, 0.1))(cells)
        assert (out["cam"] >= 0).all()
        score = gradcamo_score(upsample_cam(out["cam"], CROP), masks)
        assert ((score >= 0) & (score <= 1)).all(), method
    with pytest.raises(InputError, match="gradcam"):
        GradCamProfiler(model, "_blocks.2", "smoothgrad")


def test_layer_by_resolution_serves_every_crop_size():
    small = build_model("b0", 5, 3, (12, 32, 32))
    paper = build_model("b0", 5, 3, (21, 128, 128))
    assert map_shapes(small, (12, 32, 32))["_blocks.1"] == (3, 8, 8)
    layer = layer_for_resolution(small, (12, 32, 32), 8)
    assert min(map_shapes(small, (12, 32, 32))[layer][1:]) >= 8
    assert layer.startswith("_blocks.1") or layer.startswith("_blocks.2.")
    big = layer_for_resolution(paper, (21, 128, 128), 8)
    shapes = map_shapes(paper, (21, 128, 128))
    assert shapes[big][1:] == (8, 8)
    names = list(shapes)
    assert all(min(shapes[n][1:]) < 8 for n in names[names.index(big) + 1 :])
    with pytest.raises(InputError, match="64 voxels"):
        layer_for_resolution(small, (12, 32, 32), 64)
