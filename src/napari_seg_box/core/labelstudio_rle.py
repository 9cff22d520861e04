"""Label Studio's brush run-length format (the ``rle`` of ``brushlabels`` results), read and written.

Label Studio stores a brush mask as the RGBA pixels of the image (H * W * 4 values, row by row),
packed with thi.ng's ``rle-pack``: a bit stream of a 32-bit value count, a 5-bit word size minus one,
four 4-bit run-length field sizes minus one, then blocks of ``flag (1 bit) | size index (2) | length
- 1 (that many bits)`` followed by one word (flag 1: a run of one value) or ``length`` words (flag 0:
literal values), padded with zero bits to whole bytes. The mask is the alpha channel: Label Studio
shows a pixel as part of the region when its alpha is not 0.

:func:`decode_rle` reads any such stream (literal blocks too, as the Label Studio editor writes
them); :func:`encode_rle` writes exactly what ``label_studio_converter.brush.mask2rle`` writes for a
0/255 mask (word size 8, field sizes 3, 4, 8, 16), with numpy instead of one Python string per run.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import DataError

HEADER_BITS = 32 + 5 + 4 * 4
RLE_SIZES = (3, 4, 8, 16)  # the field sizes Label Studio's encoders use
WORD_SIZE = 8


def _as_bytes(rle: Sequence[int] | np.ndarray, what: str) -> bytes:
    try:
        arr = np.asarray(rle)
        ok = arr.ndim == 1 and (arr.size == 0 or (np.issubdtype(arr.dtype, np.integer) and arr.min() >= 0 and arr.max() <= 255))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise DataError(f"{what}: the brush 'rle' must be a list of byte values (0..255); the export holds something else.")
    return arr.astype(np.uint8).tobytes()


def rle_length(rle: Sequence[int] | np.ndarray, *, what: str = "The brush mask") -> int:
    """The number of values (H * W * 4 for a brush mask) a run-length says it holds (its header)."""
    return _count(_as_bytes(rle, what), what)


def _count(buf: bytes, what: str) -> int:
    if len(buf) * 8 < HEADER_BITS:
        raise DataError(f"{what}: the brush run-length is cut short ({len(buf)} bytes, not even a header). Export it again.")
    return int.from_bytes(buf[:4], "big")


def decode_rle(rle: Sequence[int] | np.ndarray, height: int, width: int, *, what: str = "The brush mask") -> np.ndarray:
    """The (height, width) uint8 alpha channel of a Label Studio brush run-length (0 = not painted).

    ``what`` names the mask in error messages (``"task 7, 'nucleus'"``). Raises :class:`DataError`
    when the run-length holds another number of pixels than ``height`` x ``width`` or is damaged.
    """
    buf = _as_bytes(rle, what)
    num, nbits = _count(buf, what), len(buf) * 8
    if num != height * width * 4:
        raise DataError(
            f"{what}: the brush run-length holds {num:,} values ({num / 4:,.0f} RGBA pixels) but the image is {width} x {height} "
            f"(original_width x original_height) = {height * width:,} pixels. The mask was drawn on another image size: export "
            "the task again from the same image."
        )
    padded = buf + bytes(16)
    head = int.from_bytes(padded[4:7], "big") >> 3  # the 21 bits after the count
    word = (head >> 16) + 1
    sizes = [((head >> (12 - 4 * k)) & 15) + 1 for k in range(4)]
    if word > 32:
        raise DataError(f"{what}: the brush run-length uses {word}-bit words (at most 32 are possible): it is damaged.")
    word_mask, size_masks = (1 << word) - 1, [(1 << s) - 1 for s in sizes]
    bits = None  # unpacked lazily, for literal blocks
    values: list = []  # arrays of values and of their repeat counts, in order
    counts: list = []
    run_values: list[int] = []
    run_counts: list[int] = []
    pos, i = HEADER_BITS, 0
    from_bytes = int.from_bytes
    while i < num and pos + 3 <= nbits:
        # one 72-bit window holds a block's head (3 + up to 16 bits) and a word (up to 32 bits)
        window = from_bytes(padded[pos >> 3 : (pos >> 3) + 9], "big")
        left = 72 - (pos & 7)  # bits of the window from pos on
        flag_idx = (window >> (left - 3)) & 7
        size = sizes[flag_idx & 3]
        n = ((window >> (left - 3 - size)) & size_masks[flag_idx & 3]) + 1
        pos += 3 + size
        if flag_idx >> 2:  # a run of one value
            if pos + word > nbits:
                break
            run_values.append((window >> (left - 3 - size - word)) & word_mask)
            run_counts.append(n)
            pos += word
        else:  # n literal values
            end = pos + n * word
            if end > nbits:
                break
            if bits is None:
                bits = np.unpackbits(np.frombuffer(buf, np.uint8))
            if run_values:
                values.append(np.asarray(run_values, np.int64))
                counts.append(np.asarray(run_counts, np.int64))
                run_values, run_counts = [], []
            weights = np.left_shift(np.int64(1), np.arange(word - 1, -1, -1, dtype=np.int64))
            values.append(bits[pos:end].reshape(n, word).astype(np.int64) @ weights)
            counts.append(np.ones(n, np.int64))
            pos = end
        i += n
    if i < num:
        raise DataError(f"{what}: the brush run-length ends after {i:,} of its {num:,} values: it is damaged. Export the task again.")
    if run_values:
        values.append(np.asarray(run_values, np.int64))
        counts.append(np.asarray(run_counts, np.int64))
    value = np.clip(np.concatenate(values), 0, 255).astype(np.uint8)  # alpha: 0..255 (wider words are clipped)
    return np.repeat(value, np.concatenate(counts))[3:num:4].reshape(height, width)


def encode_rle(mask: np.ndarray) -> list[int]:
    """A (H, W) mask as a Label Studio brush run-length: painted (non-zero) pixels get the RGBA value
    (255, 255, 255, 255), the others (0, 0, 0, 0). The bytes are those of
    ``label_studio_converter.brush.mask2rle(mask * 255)``; the value count is H * W * 4."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise DataError(f"A brush mask is one 2D plane; got an array of shape {mask.shape}.")
    flat = (mask.ravel() != 0).astype(np.uint8) * np.uint8(255)
    if flat.size == 0:
        raise DataError("A brush mask needs at least one pixel.")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts = np.concatenate([[0], change])
    lengths = np.diff(np.concatenate([starts, [flat.size]])) * 4  # every pixel is 4 equal RGBA values
    return _pack(flat[starts], lengths, flat.size * 4)


def _pack(values: np.ndarray, lengths: np.ndarray, num: int) -> list[int]:
    """Runs of (value, length) into the bit stream of ``label_studio_converter.brush.encode_rle``."""
    lengths = lengths.astype(np.int64)
    index = np.select([lengths <= 8, lengths <= 16, lengths <= 256], [0, 1, 2], 3)
    # runs longer than 2**16 are cut into 2**16 pieces and the rest, all with the 16-bit field
    pieces = np.where(lengths > 2**16, -(-lengths // 2**16), 1)
    run = np.repeat(np.arange(lengths.size), pieces)
    last = np.r_[run[1:] != run[:-1], True]
    length = np.where(last, lengths[run] - (pieces[run] - 1) * 2**16, 2**16)
    idx = index[run]
    size = np.asarray(RLE_SIZES, np.int64)[idx]
    flag = (lengths[run] > 1).astype(np.int64)
    width = 3 + size + WORD_SIZE
    code = (flag << (2 + size + WORD_SIZE)) | (idx << (size + WORD_SIZE)) | ((length - 1) << WORD_SIZE) | values[run].astype(np.int64)
    most = int(width.max())
    shifts = np.arange(most - 1, -1, -1, dtype=np.int64)
    body = ((code[:, None] >> shifts) & 1).astype(np.uint8)[shifts[None, :] < width[:, None]]
    header = f"{num:032b}{WORD_SIZE - 1:05b}" + "".join(f"{s - 1:04b}" for s in RLE_SIZES)
    head = np.frombuffer(header.encode(), np.uint8) - ord("0")
    total = head.size + body.size
    pad = np.zeros(8 - total % 8, np.uint8)  # as the reference: a whole zero byte when already aligned
    return np.packbits(np.concatenate([head, body, pad])).tolist()
