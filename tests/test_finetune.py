"""Fine-tuning levers (train.fit.finetune and the trainer's use of them): parameter groups with a lower backbone
learning rate, heads-only epochs on frozen features, BatchNorm statistics kept, best epoch by val AUC."""

from __future__ import annotations

import pytest
import torch

from edge_runtime.preprocess import PreprocessConfig
from train.errors import ConfigError
from train.fit.config import TrainConfig
from train.fit.finetune import (backbones, freeze_batchnorm, param_groups, set_backbone_trainable,
                                trainable_backbone_params)
from train.fit.steps import selection_score
from train.fit.trainer import train
from train.model.mgfen import build_model, preset

from test_train import make_data

torch.set_num_threads(1)
TINY = dict(backbone="resnet18", frame_size=128, global_size=64, crop_size=32)


def _tiny(**kw):
    """An edge-preset model (stem..C3 frozen) with a random ResNet-18 at tiny sizes."""
    pre = PreprocessConfig(frame_size=128, global_size=64, crop_size=32)
    return build_model(preset("edge", backbone="resnet18", preprocess=pre, **kw))


def test_param_groups_split_heads_and_backbone_and_cover_every_trainable_parameter():
    model = _tiny()
    groups = param_groups(model, lr=1e-3, backbone_lr_scale=0.1)
    assert [g["name"] for g in groups] == ["heads", "backbone"]
    assert groups[0]["lr"] == pytest.approx(1e-3) and groups[1]["lr"] == pytest.approx(1e-4)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))  # no parameter in two groups
    assert set(ids) == {id(p) for p in model.parameters() if p.requires_grad}
    trunk = {id(p) for p in model.global_net.backbone.parameters()}
    assert all(id(p) in trunk for p in groups[1]["params"])
    assert id(model.global_net.fc.weight) in {id(p) for p in groups[0]["params"]}
    assert id(model.heads[0].weight) in {id(p) for p in groups[0]["params"]}


def test_separate_part_backbone_counts_as_backbone():
    model = _tiny(part_backbone="separate")
    assert len(backbones(model)) == 2
    part_trunk = {id(p) for p in model.part_net.backbone.parameters() if p.requires_grad}
    backbone_group = {id(p) for p in param_groups(model, 1e-3, 0.5)[1]["params"]}
    assert part_trunk and part_trunk <= backbone_group


def test_set_backbone_trainable_keeps_freeze_early_fixed():
    model = _tiny()  # the edge preset freezes stem..C3
    early = [p for m in model.global_net.backbone.early_modules() for p in m.parameters()]
    assert early and not any(p.requires_grad for p in early)
    set_backbone_trainable(model, False)
    assert not any(p.requires_grad for p in trainable_backbone_params(model))
    set_backbone_trainable(model, True)
    assert all(p.requires_grad for p in trainable_backbone_params(model))
    assert not any(p.requires_grad for p in early)  # still frozen


def test_freeze_batchnorm_keeps_running_statistics():
    model = _tiny()
    model.train()
    assert freeze_batchnorm(model) > 0
    bn = next(m for m in model.global_net.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d) and m.weight.requires_grad)
    before = bn.running_mean.clone()
    model(torch.rand(2, 3, 64, 64), torch.rand(2, 3, 128, 128))
    assert torch.equal(bn.running_mean, before)
    model.train()  # without freezing, a forward pass moves the statistics
    model(torch.rand(2, 3, 64, 64), torch.rand(2, 3, 128, 128))
    assert not torch.equal(bn.running_mean, before)


def test_head_epochs_leave_the_backbone_untouched(tmp_path):
    """With head_epochs == epochs only the heads learn: every backbone tensor (weights and BN statistics)
    of best.pt equals the pretrained/initial one, while the classifier moved."""
    data = make_data(tmp_path / "d")
    cfg = TrainConfig(data=str(data), out=str(tmp_path / "run"), pretrained="none", epochs=2, batch=4, threads=1,
                      progress=False, head_epochs=2, bg_replace=0.0, seed=3, **TINY)
    torch.manual_seed(3)
    initial = build_model(cfg.resolved().model_config(2), pretrained="none").state_dict()
    train(cfg)
    state = torch.load(tmp_path / "run" / "best.pt", map_location="cpu", weights_only=False)["state_dict"]
    trunk = [k for k in state if k.startswith("global_net.backbone.")]
    assert trunk and all(torch.equal(state[k], initial[k]) for k in trunk)
    assert not torch.equal(state["global_net.fc.weight"], initial["global_net.fc.weight"])


def test_selection_score_prefers_auc_when_asked():
    a = {"val_acc": 0.9, "val_auc": 0.80, "val_loss": 0.3, "train_acc": 1.0, "train_loss": 0.1}
    b = {"val_acc": 0.8, "val_auc": 0.95, "val_loss": 0.4, "train_acc": 1.0, "train_loss": 0.1}
    assert selection_score(a, "accuracy") > selection_score(b, "accuracy")
    assert selection_score(b, "auc") > selection_score(a, "auc")
    one_class = {"val_acc": 0.7, "val_auc": None, "val_loss": 0.5, "train_acc": 1.0, "train_loss": 0.1}
    assert selection_score(one_class, "auc") == (0.7, -0.5)


@pytest.mark.parametrize("kw", [{"backbone_lr_scale": -1.0}, {"head_epochs": -1}, {"select": "f1"}])
def test_bad_lever_values_are_config_errors(kw):
    with pytest.raises(ConfigError):
        TrainConfig(data="d", out="o", **kw)
