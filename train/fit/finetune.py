"""Fine-tuning a pretrained MGFEN on few images: which parameters learn, how fast, and when.

    groups = param_groups(model, lr=1e-3, backbone_lr_scale=0.1)     # heads at lr, backbone at lr/10
    set_backbone_trainable(model, False)                               # linear-probe phase: heads only
    freeze_batchnorm(model)                                            # after every model.train()

Small real sets (a few hundred photos) are where a linear probe on frozen ImageNet features beats a fully
fine-tuned network: fine-tuning from a random head distorts the pretrained features before the head is
any good. The remedies here are the usual ones: train the heads first on frozen features (linear probe,
then fine-tune), a lower learning rate for the backbone than for the new heads, and BatchNorm statistics
kept at their pretrained values when batches are small.

"Backbone" means the pretrained trunks (global and, if separate, part); "heads" are everything new:
the linear classifiers, the FPN (MSFM) and the heatmap convolutions (APPM).
"""

from __future__ import annotations

from torch import nn

from train.model.mgfen import MGFEN


def backbones(model: MGFEN) -> list[nn.Module]:
    """The pretrained trunks of `model`: the global backbone and, with part_backbone "separate", the part one."""
    nets = [model.global_net.backbone]
    if model.part_net is not None:
        nets.append(model.part_net.backbone)
    return nets


def _backbone_ids(model: MGFEN) -> set[int]:
    return {id(p) for net in backbones(model) for p in net.parameters()}


def param_groups(model: MGFEN, lr: float, backbone_lr_scale: float) -> list[dict]:
    """Optimizer parameter groups: heads at `lr`, backbone at `lr * backbone_lr_scale`.

    Parameters frozen by `freeze_early` (requires_grad False at build time) are left out. One scheduler
    scales both groups alike, so their ratio holds for the whole run."""
    in_backbone = _backbone_ids(model)
    heads = [p for p in model.parameters() if p.requires_grad and id(p) not in in_backbone]
    trunk = [p for p in model.parameters() if p.requires_grad and id(p) in in_backbone]
    groups = [{"params": heads, "lr": lr, "name": "heads"}]
    if trunk:
        groups.append({"params": trunk, "lr": lr * backbone_lr_scale, "name": "backbone"})
    return groups


def trainable_backbone_params(model: MGFEN) -> list[nn.Parameter]:
    """The backbone parameters that fine-tuning updates (those not frozen by `freeze_early`)."""
    frozen_early = {id(p) for net in backbones(model) if getattr(net, "_frozen", False)
                    for m in net.early_modules() for p in m.parameters()}
    return [p for net in backbones(model) for p in net.parameters() if id(p) not in frozen_early]


def set_backbone_trainable(model: MGFEN, trainable: bool) -> None:
    """Linear-probe phase (False): no gradient into the backbone; fine-tune phase (True): back on, except
    for the early layers `freeze_early` keeps fixed."""
    for p in trainable_backbone_params(model):
        p.requires_grad_(trainable)


def freeze_batchnorm(model: MGFEN) -> int:
    """Put every BatchNorm layer of the backbones in eval mode (running statistics kept, affine weights
    still learn). Call after each `model.train()`. Returns how many layers it froze."""
    count = 0
    for net in backbones(model):
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
                count += 1
    return count
