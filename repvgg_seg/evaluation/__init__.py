"""How deployed models are checked against PyTorch: the images and the
windows a model sees (:mod:`.windows`), agreement measures
(:mod:`.agreement`) and held-out metrics (:mod:`.metrics`)."""
