"""Ray entry points: parallel preprocessing, distributed training, parallel inference."""
