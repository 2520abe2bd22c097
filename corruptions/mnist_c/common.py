"""What every MNIST-C corruption shares: the 28x28 grey image grid and its 8-bit rounding, work in
chunks on threads, numpy randomness from the torch generator, and the base classes."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
import numpy as np
import torch

from robench.corruptions import base
from robench.corruptions.base import Corruption


SIZE = 28
CENTRE = 13.5  # the affine maps keep the image centre fixed


def grey(images: torch.Tensor) -> np.ndarray:
    """(N, 1, 28, 28) float in [0, 1] -> (N, 28, 28) float64 numpy on the 8-bit grid (the original's
    input is a uint8 image)."""
    return images[:, 0].detach().cpu().double().mul(255).round_().div_(255).numpy()


def to_images(values: np.ndarray | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Values in [0, 1] (N, 28, 28) -> images on the 8-bit grid, as the reference's
    ``np.round(float32(255 * clip(x, 0, 1)))``."""
    grid = np.round((np.clip(np.asarray(values), 0, 1) * 255).astype(np.float32)) / np.float32(255)
    return torch.from_numpy(grid[:, None]).to(device=like.device, dtype=like.dtype)


CHUNK = 1000  # images per piece of work: small enough for the CPU cache, large enough to amortise numpy calls


def in_chunks(fn, *arrays: np.ndarray, threaded: bool = True) -> np.ndarray:
    """`fn` on aligned pieces of CHUNK images of `arrays` (along the first axis), concatenated. With
    `threaded`, the pieces run on torch's intra-op thread count: numpy releases the GIL in its array loops
    (not worth it for loops of small operations, which hold the GIL). `fn` must be pure (draw the
    randomness beforehand), so the output does not depend on the threads."""
    pieces = [tuple(a[i:i + CHUNK] for a in arrays) for i in range(0, len(arrays[0]), CHUNK)]
    threads = min(torch.get_num_threads() if threaded else 1, len(pieces))
    if threads <= 1:
        return np.concatenate([fn(*piece) for piece in pieces])
    with ThreadPoolExecutor(threads) as pool:
        return np.concatenate(list(pool.map(lambda piece: fn(*piece), pieces)))


def numpy_rng(generator: torch.Generator) -> np.random.Generator:
    """A numpy generator seeded from the torch one (the heavy work runs in numpy, single-threaded)."""
    seed = int(torch.randint(0, 2 ** 63 - 1, (1,), generator=generator, device=generator.device))
    return np.random.Generator(np.random.SFC64(seed))


class MnistCCorruption(Corruption):
    """An MNIST-C corruption: 28x28 grey images only."""

    input_shape = (1, SIZE, SIZE)


class Graded(base.Graded, MnistCCorruption):
    """An MNIST-C corruption with the original's five severity levels."""
