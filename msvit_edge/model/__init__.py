"""The model: ViT/DeiT (``vit``), MSViT's gate and mixed-scale tokenizer on top of it (``msvit``), their configs and
presets (``config``), checkpoints in and out (``checkpoint``) and MAC counts (``flops``)."""
