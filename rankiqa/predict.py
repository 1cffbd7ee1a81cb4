"""`rankiqa predict`: quality scores for image files and folders.

Folders are searched recursively for the extensions Pillow reads; a file that cannot be decoded
(truncated, not an image) is reported and skipped, never a crash. Scores are the model's output:
after fine-tuning, normalised MOS in [0, 1] with higher better; after stage one only, an
uncalibrated ranking score (higher better).
"""

import os


from rankiqa import inference


def find_images(paths):
    """Expands files and folders (recursively) into (image files, problems)."""
    files, problems = [], []
    for path in paths:
        if os.path.isdir(path):
            for root, dirs, names in os.walk(path):
                dirs.sort()
                for name in sorted(names):
                    if not name.startswith("."):
                        files.append(os.path.join(root, name))
        elif os.path.isfile(path):
            files.append(path)
        else:
            problems.append(f"{path}: no such file or folder")
    return files, problems


def predict(paths, checkpoint, net=None, crops=1, crop_mode="grid", batch_size=32,
            device="auto", weights=None):
    """Scores every readable image under `paths`.

    Returns:
      (rows ``[{"path", "score"}]``, problems ``[message]`` for files that were skipped).
    """
    files, problems = find_images(paths)
    rows = []
    with inference.Scorer(checkpoint, net=net, device=device, weights=weights) as scorer:
        per_batch = max(1, batch_size // crops)
        pending, pending_paths = [], []

        def flush():
            if pending:
                scores = scorer.crop_scores(pending, crops, crop_mode).mean(axis=1)
                rows.extend({"path": p, "score": float(s)} for p, s in zip(pending_paths, scores))
                pending.clear()
                pending_paths.clear()

        for path in files:
            try:
                image = inference.load_image(path)
            except inference.UnreadableImage as e:
                problems.append(str(e))
                continue
            pending.append(image)
            pending_paths.append(path)
            if len(pending) >= per_batch:
                flush()
        flush()
    return rows, problems
