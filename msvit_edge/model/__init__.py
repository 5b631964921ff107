"""The model: ViT/DeiT (``vit``), MSViT's gate and mixed-scale tokenizer on top of it (``msvit``), the dense head of
the segmentation task (``segmenter``), their configs and presets (``config``), the model a config describes
(``factory``), checkpoints in and out (``checkpoint``) and MAC counts (``flops``)."""
