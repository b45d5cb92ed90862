"""Near-duplicate drafts by perceptual hash, so the review sheet does not show ten of the same.

Each scored draft records ``scores.phash``: the 64-bit DCT perceptual hash (OpenCV contrib's
``img_hash.pHash``, ~1 ms) as 16 hex digits. A draft whose hash is within
``[score] duplicate_distance`` bits of an *older* draft's gets the flag ``duplicate`` and
``scores.duplicate_of`` = that older draft's id: the first of a group stays unflagged.
"""

from __future__ import annotations


def phash(rgb) -> str:
    import cv2

    return cv2.img_hash.pHash(rgb).tobytes().hex()


def distance(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


class HashIndex:
    """The hashes of known drafts, oldest first; answers "which older draft is this one like"."""

    def __init__(self, max_distance: int):
        self.max_distance = max_distance
        self.hashes: dict[str, str] = {}

    def add(self, draft_id: str, value: str | None) -> None:
        if value:
            self.hashes[draft_id] = value

    def original_of(self, draft_id: str, value: str) -> str | None:
        """The oldest draft older than ``draft_id`` within the distance, or None."""
        for other, h in sorted(self.hashes.items()):
            if other >= draft_id:
                break
            if distance(h, value) <= self.max_distance:
                return other
        return None
