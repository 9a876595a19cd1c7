"""CelebA: the 40 attribute names and the factor space of the chosen attributes."""

from __future__ import annotations

from collections.abc import Sequence

from ..factors import Factor, FactorSpace

__all__ = ["CELEBA_ATTRIBUTES", "DEFAULT_PAIR_ATTRIBUTES", "celeba_space"]

CELEBA_ATTRIBUTES: tuple[str, ...] = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald",
    "Bangs", "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair",
    "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin",
    "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones",
    "Male", "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes", "No_Beard",
    "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks",
    "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings",
    "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)  # fmt: skip
"""The 40 CelebA attributes in the order of ``list_attr_celeba.txt``."""

DEFAULT_PAIR_ATTRIBUTES: tuple[str, ...] = CELEBA_ATTRIBUTES[:10]
"""Attributes used for pairs unless told otherwise: the first 10 of the file."""


# ------------------------------------------------------------------------------------------------
# factor space
# ------------------------------------------------------------------------------------------------
def _check_attributes(attributes: Sequence[str]) -> tuple[str, ...]:
    if isinstance(attributes, str):
        attributes = [attributes]
    attributes = tuple(attributes)
    if not attributes:
        raise ValueError(f"choose at least one CelebA attribute; valid names: {', '.join(CELEBA_ATTRIBUTES)}")
    unknown = [a for a in attributes if a not in CELEBA_ATTRIBUTES]
    if unknown:
        raise ValueError(
            f"unknown CelebA attribute(s) {unknown}; valid names (file order): {', '.join(CELEBA_ATTRIBUTES)}"
        )
    if len(set(attributes)) != len(attributes):
        raise ValueError(f"CelebA attributes must not repeat, got {list(attributes)}")
    return attributes


def celeba_space(attributes: Sequence[str] = DEFAULT_PAIR_ATTRIBUTES) -> FactorSpace:
    """Factor space ``"celeba"``: one binary factor (values 0.0, 1.0, not cyclic) per attribute.

    With :class:`~datamodules.factors.ActionSpace` this gives the actions ``Smiling-`` (id 2k) and
    ``Smiling+`` (id 2k+1) for the k-th chosen attribute.
    """
    attributes = _check_attributes(attributes)
    return FactorSpace("celeba", tuple(Factor(a, 2, (0.0, 1.0)) for a in attributes))
