"""The images: the embedded synthetic dataset (synth, synth_tag, synth_config), data folders and their
group-aware splits (folders), real photos arranged from public repositories (real_data), the frame fit
(frame_fit), the contact sheet (sheet) and the torch Dataset that runs the runtime preprocessing (dataset)."""
