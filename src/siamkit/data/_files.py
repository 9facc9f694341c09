"""File helpers shared by the dataset loaders: natural sort, image listing, decoding."""

from __future__ import annotations

import re
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
from PIL import Image

from ..errors import DataError
from .images import IMAGE_EXTENSIONS, load_image

__all__: list[str] = []


def _natural_key(name: str) -> list[object]:
    """Sort key comparing digit runs as numbers: "s2" < "s10", "run2" < "run10"."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


def _images_in(folder: Path) -> list[Path]:
    """Image files directly inside ``folder`` (not recursive), natural order."""
    return sorted((p for p in folder.iterdir() if _is_image(p)), key=lambda p: _natural_key(p.name))


def _as_size(image_size: int | Sequence[int] | None) -> tuple[int, int] | None:
    if image_size is None:
        return None
    if isinstance(image_size, int):
        size = (image_size, image_size)
    else:
        size = tuple(int(s) for s in image_size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"image_size must be a positive int or (height, width), got {image_size!r}")
    return size  # type: ignore[return-value]


def _decode_files(
    paths: Sequence[Path],
    *,
    size: tuple[int, int] | None,
    channels: int | None,
    preprocess: Callable[[Image.Image], Image.Image] | None = None,
    workers: int = 2,
    progress: bool = False,
    desc: str = "decoding images",
) -> torch.Tensor:
    """Decode many image files into one uint8 tensor (N, C, H, W), in ``paths`` order.

    ``workers > 1`` splits the files between that many threads. Pillow releases the GIL
    only inside the C decoder and resizer, so threads pay off for large images with
    expensive preprocessing (scans), not for tiny files whose cost is Python overhead
    (Omniglot: 13k files in 1.2 s on one thread, 1.9 s on two; warm cache, 2 cores).
    ``size=None`` takes the size of the first image; ``channels=None`` the
    first image's own channel count (all images are converted to it).

    Raises:
        DataError: an unreadable file (named in the message), or no files.
    """
    if not paths:
        raise DataError("no image files to decode")
    first = load_image(paths[0], size=size, channels=channels, preprocess=preprocess)
    c, h, w = (int(s) for s in first.shape)
    size = (h, w)
    out = torch.empty((len(paths), c, h, w), dtype=torch.uint8)
    out[0] = first

    def run(lo: int, hi: int, bar: Callable[[int], None] | None) -> None:
        for i in range(lo, hi):
            out[i] = load_image(paths[i], size=size, channels=c, preprocess=preprocess)
            if bar is not None and (i - lo) % 256 == 255:
                bar(256)

    n = len(paths)
    workers = max(1, min(int(workers), n - 1))
    bounds = [1 + (n - 1) * k // workers for k in range(workers + 1)]
    with _progress(progress and sys.stderr.isatty(), n, desc) as bar:
        if workers == 1:
            run(1, n, bar)
        else:
            with ThreadPoolExecutor(max_workers=workers) as ex:
                futures = [ex.submit(run, bounds[k], bounds[k + 1], bar) for k in range(workers)]
                for f in futures:
                    f.result()
    return out


@contextmanager
def _progress(show: bool, total: int, desc: str) -> Iterator[Callable[[int], None] | None]:
    """A rich progress bar (advance by calling the yielded function), or None."""
    if not show:
        yield None
        return
    from rich.progress import Progress

    with Progress(transient=True) as prog:
        task = prog.add_task(desc, total=total)
        yield lambda k: prog.advance(task, k)
