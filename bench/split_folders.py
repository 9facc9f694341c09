"""Write a benchmark's identity split as folders of symbolic links, for the CLI.

``siamkit train --recipe faces --data OUT/train --val-data OUT/val`` then
``siamkit calibrate`` on ``OUT/val`` and ``siamkit evaluate`` on ``OUT/test`` reproduce
``bench/bench_faces.py``'s protocol for one split seed: the same identities
(:func:`siamkit.data.split_identities` with 10 test and 5 validation identities) as the
bench draws. The folders hold links to the shared files (nothing is copied); OUT defaults
to a new temporary folder.

    python bench/split_folders.py faces --seed 0 --out faces-split-0
    python bench/split_folders.py signatures --seed 0 --out sig-split-0
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from _common import SHARED_DATA

from siamkit.data.faces import load_face_folder, split_identities
from siamkit.data.signatures import load_signatures, split_writers

#: dataset -> (folder under shared/data, test count, validation count)
SPLITS = {"faces": ("att_faces", 10, 5), "signatures": ("cedar_signatures", 10, 5)}


def write_split(name: str, seed: int, out: Path) -> dict:
    """Link every identity folder of one split into ``out/{train,val,test}``.

    Args:
        name: ``faces`` or ``signatures``.
        seed: the split seed (the bench's).
        out: the folder to write.

    Returns:
        The split record (identity names of each part).
    """
    folder, n_test, n_val = SPLITS[name]
    root = SHARED_DATA / folder
    if name == "faces":
        info = split_identities(load_face_folder(root, image_size=8), n_test, n_val, seed=seed).info
    else:
        info = split_writers(load_signatures(root, image_size=8, preprocess=False), n_test, n_val, seed=seed).info
    for part in ("train", "val", "test"):
        (out / part).mkdir(parents=True, exist_ok=True)
        for ident in info[part]:
            link = out / part / ident
            if not link.exists():
                link.symlink_to((root / ident).resolve(), target_is_directory=True)
    (out / "split.json").write_text(json.dumps(info, indent=1))
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", choices=sorted(SPLITS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix=f"siamkit-{args.dataset}-split-"))
    info = write_split(args.dataset, args.seed, out)
    print(f"{out}: train {len(info['train'])}, val {len(info['val'])}, test {len(info['test'])} identities")


if __name__ == "__main__":
    main()
