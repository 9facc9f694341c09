"""Rebuild (or check) the compact Omniglot shipped in the package from the original PNGs.

    python tools/build_omniglot_compact.py            # writes src/siamkit/data/omniglot28.npz
    python tools/build_omniglot_compact.py --check    # rebuilds in memory, compares bit for bit

Source: ``../shared/data/omniglot`` (Lake et al. 2015, MIT; see ``omniglot28.LICENSE`` and
``omniglot28.README.md`` beside the shipped file). Every one of the 32,460 drawings
(1,623 characters x 20 drawers, background and evaluation splits) is reduced to 28x28 by an
exact integer rule, so the result does not depend on any library's resampling code:

1. decode the 105x105 1-bit PNG (Pillow mode ``1``; True = white paper);
2. pad it with white to 112x112 (3 pixels top/left, 4 bottom/right);
3. count the ink pixels of each 4x4 block (0..16);
4. grey level ``255 - (count * 255 + 8) // 16`` (= 255 - round(255 * count / 16)):
   white background 255, black ink 0, as :func:`siamkit.data.load_omniglot` keeps it.

The official 20 one-shot runs are stored as indices: every one of their 800 PNGs is
pixel-identical to a drawing of the evaluation split (checked here), so each run is
``(support (20,), query (20,), answer (20,))`` indices into the compact images.

The ``.npz`` is written as a zip with fixed timestamps and member order, so the same inputs
give the same bytes (with the same zlib); ``--check`` compares every array and the bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT.parent / "shared" / "data" / "omniglot"
TARGET = ROOT / "src" / "siamkit" / "data" / "omniglot28.npz"
SIDE = 28
FORMAT = 1
SPLITS = ("background", "evaluation")


def downsample(png: Path) -> np.ndarray:
    """One 105x105 1-bit PNG -> uint8 (28, 28), white 255, ink 0 (the rule in the docstring).

    Args:
        png: the file.

    Returns:
        The image.
    """
    with Image.open(png) as im:
        paper = np.asarray(im.convert("1"), dtype=bool)
    if paper.shape != (105, 105):
        raise SystemExit(f"{png}: expected 105x105, got {paper.shape}")
    ink = np.zeros((112, 112), dtype=np.int32)
    ink[3:108, 3:108] = ~paper
    count = ink.reshape(SIDE, 4, SIDE, 4).sum(axis=(1, 3))
    return (255 - (count * 255 + 8) // 16).astype(np.uint8)


def _bits(png: Path) -> bytes:
    with Image.open(png) as im:
        return np.packbits(np.asarray(im.convert("1"), dtype=bool)).tobytes()


def build(source: Path) -> dict[str, np.ndarray]:
    """Every array of the compact file, from the PNGs under ``source``.

    Args:
        source: the folder holding images_background, images_evaluation, one_shot_runs.

    Returns:
        name -> array (see siamkit.data.omniglot_compact for their meaning).
    """
    images, char_of, drawer, alphabets, classes, class_alphabet, class_split, class_id = [], [], [], [], [], [], [], []
    bits_index: dict[bytes, int] = {}
    for s, split in enumerate(SPLITS):
        folder = source / f"images_{split}"
        for a_dir in sorted((p for p in folder.iterdir() if p.is_dir()), key=lambda p: p.name):
            alphabets.append(a_dir.name)
            chars = sorted((p for p in a_dir.iterdir() if p.is_dir()), key=lambda p: int(p.name.removeprefix("character")))
            for c_dir in chars:
                files = sorted(c_dir.glob("*.png"))
                if len(files) != 20:
                    raise SystemExit(f"{c_dir}: {len(files)} drawings, expected 20")
                classes.append(f"{a_dir.name}/{c_dir.name}")
                class_alphabet.append(len(alphabets) - 1)
                class_split.append(s)
                class_id.append(int(files[0].stem.split("_")[0]))
                for f in files:
                    if split == "evaluation":
                        bits_index.setdefault(_bits(f), len(images))
                    images.append(downsample(f))
                    char_of.append(len(classes) - 1)
                    drawer.append(int(f.stem.split("_")[1]))
    support, query, answer = _official_runs(source / "one_shot_runs", bits_index)
    return {
        "format": np.array(FORMAT, dtype=np.int16),
        "images": np.stack(images),
        "character": np.array(char_of, dtype=np.int16),
        "drawer": np.array(drawer, dtype=np.uint8),
        "classes": np.array(classes),
        "class_alphabet": np.array(class_alphabet, dtype=np.int16),
        "class_split": np.array(class_split, dtype=np.uint8),
        "class_id": np.array(class_id, dtype=np.int16),
        "alphabets": np.array(alphabets),
        "splits": np.array(SPLITS),
        "runs_support": support,
        "runs_query": query,
        "runs_answer": answer,
    }


def _official_runs(runs_dir: Path, bits_index: dict[bytes, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(support, query, answer) of the 20 official runs as indices into the images."""
    run_dirs = sorted(p for p in runs_dir.iterdir() if p.is_dir())
    support = np.zeros((len(run_dirs), 20), dtype=np.int16)
    query = np.zeros_like(support)
    answer = np.zeros_like(support)
    for r, run in enumerate(run_dirs):
        sup = sorted((run / "training").glob("*.png"))
        qry = sorted((run / "test").glob("*.png"))
        for row, files in ((support, sup), (query, qry)):
            for i, f in enumerate(files):
                if _bits(f) not in bits_index:
                    raise SystemExit(f"{f} matches no drawing of the evaluation split")
                row[r, i] = bits_index[_bits(f)]
        names = [f.name for f in sup]
        pairs = (run / "class_labels.txt").read_text().split()
        for q_path, s_path in zip(pairs[0::2], pairs[1::2]):
            qi = [f.name for f in qry].index(Path(q_path).name)
            answer[r, qi] = names.index(Path(s_path).name)
    return support, query, answer


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """The arrays as a deterministic ``.npz`` (fixed member order and timestamps, deflate level 6).

    Args:
        arrays: name -> array (no object arrays).

    Returns:
        The file's bytes (readable by ``np.load(..., allow_pickle=False)``).
    """
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, arr in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, member.getvalue(), compresslevel=6)
    return buf.getvalue()


def check(target: Path, arrays: dict[str, np.ndarray], data: bytes) -> int:
    """Compare the shipped file with a rebuild: 0 when identical, 1 otherwise (printed).

    Args:
        target: the shipped file.
        arrays: the rebuilt arrays.
        data: the rebuilt file's bytes.

    Returns:
        The exit status.
    """
    if not target.is_file():
        print(f"{target} does not exist", file=sys.stderr)
        return 1
    shipped = target.read_bytes()
    with np.load(target, allow_pickle=False) as z:
        names = sorted(z.files)
        bad = [n for n in arrays if n not in names or not np.array_equal(z[n], arrays[n]) or z[n].dtype != arrays[n].dtype]
        extra = sorted(set(names) - set(arrays))
    if bad or extra:
        print(f"arrays differ from a rebuild: {bad} (extra in the file: {extra})", file=sys.stderr)
        return 1
    if shipped != data:
        print("every array is identical, but the zip container's bytes differ (another zlib?)", file=sys.stderr)
        return 1
    print(f"{target.name}: identical to a rebuild (sha256 {hashlib.sha256(shipped).hexdigest()})")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", type=Path, default=SOURCE, help="the Omniglot folder (default ../shared/data/omniglot)")
    ap.add_argument("--out", type=Path, default=TARGET)
    ap.add_argument("--check", action="store_true", help="rebuild in memory and compare with --out bit for bit")
    args = ap.parse_args(argv)
    if not args.source.is_dir():
        print(f"{args.source} does not exist", file=sys.stderr)
        return 2
    arrays = build(args.source)
    data = npz_bytes(arrays)
    if args.check:
        return check(args.out, arrays, data)
    args.out.write_bytes(data)
    print(f"wrote {args.out} ({len(data) / 1e6:.2f} MB, sha256 {hashlib.sha256(data).hexdigest()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
