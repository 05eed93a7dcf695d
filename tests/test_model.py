"""MGFEN model: shapes, box picking and snapping, crops and vote equal to edge_runtime, gradients,
offline EfficientNet-Lite0 weights, ONNX export of the global branch with input-dependent boxes."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
import torch

from edge_runtime.preprocess import PreprocessConfig
from edge_runtime.roi import crop_rois, vote_logits
from train.errors import ConfigError, PretrainedError
from train.model.backbones import EfficientNetLite0, build_backbone, lite0_weights_path, load_efficientnet_lite0
from train.model.loss import mgfen_loss
from train.model.mgfen import ModelConfig, build_model, preset

torch.set_num_threads(1)

TINY = ModelConfig(
    backbone="resnet18",
    fpn_channels=16,
    preprocess=PreprocessConfig(frame_size=128, global_size=64, crop_size=32),
)


def _batch(cfg: ModelConfig, b: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    p = cfg.preprocess
    return torch.rand(b, 3, p.global_size, p.global_size, generator=g), torch.rand(b, 3, p.frame_size, p.frame_size, generator=g)


def test_forward_shapes_and_box_invariants():
    torch.manual_seed(0)
    model = build_model(TINY).eval()
    image, frame = _batch(TINY)
    with torch.no_grad():
        out = model(image, frame)
    assert out["global_logits"].shape == (2, 2)
    assert out["heatmap"].shape == (2, 1, 16, 16)  # stride 4 of the 64 px global view
    assert 0.0 <= float(out["heatmap"].min()) and float(out["heatmap"].max()) <= 1.0
    assert out["boxes"].shape == (2, 4, 4) and out["box_scores"].shape == (2, 4)
    assert out["part_logits"].shape == (2, 4, 2) and out["logits"].shape == (2, 2)
    px = out["boxes"] * 128
    assert torch.equal(px, torch.round(px))  # snapped to whole frame pixels
    assert torch.all(px[..., 2] - px[..., 0] == 32) and torch.all(px[..., 3] - px[..., 1] == 32)
    assert float(out["boxes"].min()) >= 0.0 and float(out["boxes"].max()) <= 1.0


def test_pick_boxes_finds_peaks_and_suppresses():
    cfg = dataclasses.replace(TINY, k=3)
    model = build_model(cfg).eval()
    heat = torch.full((1, 1, 16, 16), 0.1)
    heat[0, 0, 2:6, 10:14] = 0.9  # a 4x4 hot window = one box (32 px of 128 = 4 heatmap cells)
    heat[0, 0, 10:14, 1:5] = 0.8
    boxes, scores = model._pick_boxes(heat)
    tops = {tuple((boxes[0, i, :2] * 128).round().int().tolist()) for i in range(2)}
    assert tops == {(80, 16), (8, 80)}  # (x1, y1) of the two hot windows in frame pixels
    assert torch.allclose(scores[0, :2], torch.tensor([0.9, 0.8]))
    # the third box is not a copy of the first two (suppression)
    third = tuple((boxes[0, 2, :2] * 128).round().int().tolist())
    assert third not in tops
    # scores are the mean heat of the box window
    x1, y1 = (boxes[0, 2, :2] * 16).round().int().tolist()
    assert torch.isclose(scores[0, 2], heat[0, 0, y1 : y1 + 4, x1 : x1 + 4].mean())


def test_crops_and_vote_equal_edge_runtime():
    torch.manual_seed(1)
    model = build_model(TINY).eval()
    image, _ = _batch(TINY, b=1)
    frame_u8 = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    frame = torch.from_numpy(frame_u8).permute(2, 0, 1)[None].float() / 255.0
    with torch.no_grad():
        out = model(image, frame)
        crops = model.crop(frame, out["boxes"])
    ref = crop_rois(frame_u8, out["boxes"][0].numpy(), 32)
    np.testing.assert_allclose(crops.numpy(), ref, atol=1e-6)
    # the vote written out by hand (float64 loops, not the shared vote_logits): global_weight * global logits
    # plus the part logits weighted by each box's share of the box scores
    g, parts, scores = (out[k][0].double().tolist() for k in ("global_logits", "part_logits", "box_scores"))
    assert max(scores) - min(scores) > 1e-4, "equal box scores would hide a wrong weighting"
    total = sum(scores)
    by_hand = [TINY.global_weight * g[c] + sum(s / total * p[c] for s, p in zip(scores, parts)) for c in range(2)]
    np.testing.assert_allclose(out["logits"][0].double().numpy(), by_hand, rtol=1e-5, atol=1e-5)


def test_vote_by_hand():
    """global [1, -1] at weight 0.5, parts [2, 0] and [0, 2] with box scores 3 and 1 (weights 3/4, 1/4):
    0.5 * [1, -1] + [1.5, 0] + [0, 0.5] = [2, 0]; without parts the global logits alone."""
    g = np.array([1.0, -1.0])
    parts = np.array([[2.0, 0.0], [0.0, 2.0]])
    np.testing.assert_allclose(vote_logits(g, parts, np.array([3.0, 1.0]), 0.5), [2.0, 0.0], atol=1e-5)
    np.testing.assert_allclose(vote_logits(torch.tensor(g), torch.tensor(parts), torch.tensor([3.0, 1.0]), 0.5).numpy(),
                               [2.0, 0.0], atol=1e-5)
    assert vote_logits(g, parts, np.array([3.0, 1.0]), 0.5, use_parts=False) is g


@pytest.mark.parametrize("fpn", [True, False])
def test_every_parameter_gets_a_gradient(fpn):
    torch.manual_seed(2)
    cfg = dataclasses.replace(TINY, fpn=fpn, part_backbone="separate" if fpn else "shared")
    model = build_model(cfg).train()
    image, frame = _batch(cfg, b=3)
    loss, terms = mgfen_loss(model(image, frame), torch.tensor([0, 1, 1]))
    loss.backward()
    assert set(terms) == {"global", "parts", "vote"}
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert no_grad == []
    for head in model.heads:  # the heatmap is trained (through the vote weights)
        assert float(head.weight.grad.abs().sum()) > 0


def test_no_parts_baseline_trains_global_branch_only():
    torch.manual_seed(3)
    cfg = dataclasses.replace(TINY, use_parts=False)
    model = build_model(cfg).train()
    image, _ = _batch(cfg)
    out = model(image)
    assert "part_logits" not in out and torch.equal(out["logits"], out["global_logits"])
    loss, terms = mgfen_loss(out, torch.tensor([0, 1]))
    loss.backward()
    assert set(terms) == {"global"}
    for name, p in model.named_parameters():
        appm = name.startswith(("msfm.", "heads."))
        got = p.grad is not None and bool(torch.any(p.grad != 0))
        assert got != appm, name  # global branch: gradient; APPM: none, legitimately


def test_no_fpn_heatmap_is_single_scale():
    model = build_model(dataclasses.replace(TINY, fpn=False)).eval()
    with torch.no_grad():
        _, heat, boxes, _ = model.global_forward(_batch(TINY)[0])
    assert heat.shape == (2, 1, 2, 2)  # stride 32
    assert boxes.shape == (2, 4, 4)


def test_config_roundtrip_and_errors():
    cfg = preset("edge", fpn=False)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert preset("paper").backbone == "resnet50" and preset("paper").preprocess.global_size == 448
    with pytest.raises(ConfigError):
        ModelConfig.from_dict({**cfg.to_dict(), "bogus": 1})
    with pytest.raises(ConfigError):
        ModelConfig(backbone="vgg")
    with pytest.raises(ConfigError):
        preset("huge")


def test_lite0_weights_every_key_mapped():
    path = lite0_weights_path()
    state = torch.load(path, map_location="cpu", weights_only=True)
    net = load_efficientnet_lite0("auto")
    own = net.state_dict()
    assert len(state) == 296 and set(own) == set(state)  # every key mapped, none ignored
    for key, value in state.items():
        assert torch.equal(own[key], value), key
    feats = build_backbone("efficientnet_lite0", "auto")
    assert torch.equal(feats.stem[1].weight, state["_conv_stem.weight"])
    assert torch.equal(feats.head[1].running_var, state["_bn1.running_var"])
    assert torch.equal(feats.blocks[15]._project_conv.weight, state["_blocks.15._project_conv.weight"])


def test_bad_weights_file(tmp_path):
    bad = tmp_path / "w.pt"
    torch.save({"conv.weight": torch.zeros(1)}, bad)
    with pytest.raises(PretrainedError, match="do not match"):
        load_efficientnet_lite0(str(bad))
    with pytest.raises(PretrainedError, match="not found"):
        build_backbone("resnet18", str(tmp_path / "missing.pt"))
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(PretrainedError, match="not a readable"):
        build_backbone("resnet18", str(tmp_path / "junk.pt"))


class _GlobalGraph(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, image):
        return self.model.global_forward(image)


def test_global_branch_exports_to_onnx_with_input_dependent_boxes():
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(4)
    model = build_model(TINY).eval()
    buf = io.BytesIO()
    example = torch.rand(1, 3, 64, 64)
    torch.onnx.export(_GlobalGraph(model).eval(), (example,), buf, opset_version=17, dynamo=False,
                      input_names=["image"], output_names=["global_logits", "heatmap", "boxes", "box_scores"])
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    seen = set()
    for seed in range(4):
        img = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(seed))
        img[:, :, (seed * 13) % 48 : (seed * 13) % 48 + 16, 5 * seed : 5 * seed + 16] = 1.0  # move a bright patch
        got = sess.run(None, {"image": img.numpy()})
        with torch.no_grad():
            ref = model.global_forward(img)
        for g, r in zip(got, ref):
            np.testing.assert_allclose(g, r.numpy(), rtol=1e-4, atol=1e-4)
        seen.add(tuple(np.round(got[2].ravel() * 128).astype(int)))
    assert len(seen) > 1  # the boxes are computed in the graph, not frozen constants
