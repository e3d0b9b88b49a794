"""The 12 cat breeds of the Oxford-IIIT Pet dataset, named as the dataset names them.

Their order is the dataset's own breed_id order (1..12 in the annotation files), so a
label index means the same breed everywhere: in shards, checkpoints and reports.
"""

from __future__ import annotations

CAT_BREEDS: tuple[str, ...] = (
    "Abyssinian",
    "Bengal",
    "Birman",
    "Bombay",
    "British_Shorthair",
    "Egyptian_Mau",
    "Maine_Coon",
    "Persian",
    "Ragdoll",
    "Russian_Blue",
    "Siamese",
    "Sphynx",
)

OTHER_CLASS = "other"
"""The optional 13th class: non-cats (the dataset's dog images)."""
