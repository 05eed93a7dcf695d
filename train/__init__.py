"""MGFEN training side (torch only where needed), one folder per concern, in the order of the method:

- train/data/      the images: the embedded synthetic dataset, data folders and their splits, real photos
                   arranged from public repositories, the frame fit, the torch Dataset
- train/enhance/   the paper's micro-grained feature enhancement: one-shot foreground masks, the background
                   library and blending onto it (online in training, or an offline copy of a dataset)
- train/model/     the multi-scale classifier: backbones, MGFEN (FPN, attention part proposals, heatmap-weighted
                   vote), its loss and checkpoints
- train/fit/       training: the run's config, its steps, fine-tuning levers, decision thresholds, novelty table,
                   retake gate
- train/evaluate/  a checkpoint on a split: predictions, metrics, risk-coverage, background-reliance suite,
                   out-of-domain refusal, comparison with the baselines
- train/audit/     what a data folder teaches before any model is trained (`mgfen-data audit`): shortcut
                   baselines, linear probe, near-duplicates, photo resolution
- train/cli/       the console scripts mgfen-data, mgfen-train, mgfen-eval (click only, over the folders above)

Package __init__ files import nothing: import the module you need (train.model.mgfen, train.fit.trainer, ...).
"""
