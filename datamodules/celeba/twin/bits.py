"""The CelebA twin: the attribute bits of its faces.

Attribute bits are sampled from a seeded generator with marginals close to the real ones and the
real file's consistency: at most one hair colour, ``Bald`` excludes hair colours, bangs, hair style
and a receding hairline, straight and wavy hair exclude each other, only ``Male`` faces have facial
hair, ``No_Beard`` is 1 for every female face.
"""

from __future__ import annotations

import numpy as np

from ..attributes import CELEBA_ATTRIBUTES

__all__ = ["sample_attributes"]

_A = {name: i for i, name in enumerate(CELEBA_ATTRIBUTES)}


# ------------------------------------------------------------------------------------------------
# attributes
# ------------------------------------------------------------------------------------------------
def sample_attributes(num_images: int, seed: int = 0) -> np.ndarray:
    """``(num_images, 40)`` uint8 attribute bits with CelebA-like marginals and consistency rules.

    Deterministic given ``seed``; row i does not depend on ``num_images``.
    """
    n = int(num_images)
    rng = np.random.default_rng([int(seed), 0x617474])
    u = rng.random((n, 48))  # one uniform per decision, drawn row by row
    bits = np.zeros((n, len(CELEBA_ATTRIBUTES)), dtype=bool)

    def col(name):
        return _A[name]

    male = u[:, 0] < 0.42
    young = u[:, 1] < 0.77
    bits[:, col("Male")] = male
    bits[:, col("Young")] = young
    bald = male & (u[:, 2] < np.where(young, 0.035, 0.16))
    bits[:, col("Bald")] = bald
    # Hair colour: at most one, none when bald.
    gray_p = np.where(young, 0.01, 0.22)
    black_p = np.full(n, 0.26)
    blond_p = np.where(male, 0.05, 0.27)
    brown_p = np.full(n, 0.22)
    c1 = gray_p
    c2 = c1 + black_p
    c3 = c2 + blond_p
    c4 = c3 + brown_p
    h = u[:, 3]
    bits[:, col("Gray_Hair")] = ~bald & (h < c1)
    bits[:, col("Black_Hair")] = ~bald & (h >= c1) & (h < c2)
    bits[:, col("Blond_Hair")] = ~bald & (h >= c2) & (h < c3)
    bits[:, col("Brown_Hair")] = ~bald & (h >= c3) & (h < c4)
    bits[:, col("Bangs")] = ~bald & (u[:, 4] < np.where(male, 0.08, 0.21))
    bits[:, col("Receding_Hairline")] = ~bald & (u[:, 5] < np.where(male & ~young, 0.35, 0.05))
    style = u[:, 6]
    bits[:, col("Straight_Hair")] = ~bald & (style < 0.22)
    bits[:, col("Wavy_Hair")] = ~bald & (style >= 0.22) & (style < np.where(male, 0.36, 0.70))
    # Facial hair: male faces only.
    bits[:, col("No_Beard")] = ~male | (u[:, 7] >= 0.40)
    bits[:, col("Goatee")] = male & (u[:, 8] < 0.14)
    bits[:, col("Mustache")] = male & (u[:, 9] < 0.10)
    bits[:, col("5_o_Clock_Shadow")] = male & (u[:, 10] < 0.26)
    bits[:, col("Sideburns")] = male & (u[:, 11] < 0.13)
    # Make-up and jewellery.
    bits[:, col("Heavy_Makeup")] = u[:, 12] < np.where(male, 0.005, 0.64)
    bits[:, col("Wearing_Lipstick")] = u[:, 13] < np.where(male, 0.01, 0.80)
    bits[:, col("Arched_Eyebrows")] = u[:, 14] < np.where(male, 0.09, 0.40)
    bits[:, col("Bushy_Eyebrows")] = u[:, 15] < np.where(male, 0.26, 0.06)
    bits[:, col("Wearing_Earrings")] = u[:, 16] < np.where(male, 0.02, 0.31)
    bits[:, col("Wearing_Necklace")] = u[:, 17] < np.where(male, 0.01, 0.20)
    bits[:, col("Wearing_Necktie")] = u[:, 18] < np.where(male, 0.16, 0.005)
    bits[:, col("Attractive")] = u[:, 19] < np.where(young, np.where(male, 0.40, 0.70), 0.18)
    # Expression.
    smiling = u[:, 20] < 0.48
    bits[:, col("Smiling")] = smiling
    bits[:, col("Mouth_Slightly_Open")] = u[:, 21] < np.where(smiling, 0.70, 0.27)
    bits[:, col("High_Cheekbones")] = u[:, 22] < np.where(smiling, 0.78, 0.14)
    # Age-related and the rest.
    bits[:, col("Double_Chin")] = u[:, 23] < np.where(young, 0.02, 0.16)
    bits[:, col("Chubby")] = u[:, 24] < np.where(young, 0.03, 0.16)
    bits[:, col("Bags_Under_Eyes")] = u[:, 25] < np.where(young, 0.14, 0.40)
    bits[:, col("Eyeglasses")] = u[:, 26] < np.where(young, 0.04, 0.15)
    independent = {
        "Big_Lips": 0.24, "Big_Nose": 0.23, "Blurry": 0.05, "Narrow_Eyes": 0.12, "Oval_Face": 0.28,
        "Pale_Skin": 0.05, "Pointy_Nose": 0.28, "Rosy_Cheeks": 0.07, "Wearing_Hat": 0.05,
    }
    for k, (name, p) in enumerate(independent.items()):
        bits[:, col(name)] = u[:, 27 + k] < p
    return bits.astype(np.uint8)
