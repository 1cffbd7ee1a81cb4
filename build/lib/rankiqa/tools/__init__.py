"""Model tools: export (npz/npy, frozen .pb, SavedModel), merge and inspect checkpoints."""
