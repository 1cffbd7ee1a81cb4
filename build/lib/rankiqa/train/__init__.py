"""Training: one shared session loop (loop.py) and the two stages that use it."""
