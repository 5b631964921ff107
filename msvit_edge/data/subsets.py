"""Seeded views of a data set: a random subset, a held-out split, and the way back to the data set they view."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset, Subset


def random_subset(dataset: Dataset, n: int | None, seed: int = 0) -> Dataset:
    """``n`` items drawn without replacement by a seeded permutation (all items when ``n`` is None or too large).

    Data sets may be ordered (an ImageFolder is sorted by class), so "the first n" would miss whole classes.
    """
    if n is None or n >= len(dataset):
        return dataset
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
    return _subset(dataset, order[:n].tolist())


def split(dataset: Dataset, held_out: int, seed: int = 0) -> tuple[Subset, Subset]:
    """(rest, held-out) partition of ``dataset`` by a seeded permutation; the held-out part is ``held_out`` items."""
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()
    return _subset(dataset, order[held_out:]), _subset(dataset, order[:held_out])


def unwrap(dataset: Dataset) -> tuple[Dataset, list[int]]:
    """The data set a view from ``split``/``random_subset`` indexes, and the items it views (all, for no view).

    Views never nest, so this one level reaches the scenes' ``set_epoch`` and ``box``.
    """
    if isinstance(dataset, Subset):
        return dataset.dataset, list(dataset.indices)
    return dataset, list(range(len(dataset)))


def _subset(dataset: Dataset, indices: list[int]) -> Subset:
    """A view of ``indices`` of ``dataset`` that indexes the underlying data set directly (see ``unwrap``)."""
    base, items = unwrap(dataset)
    return Subset(base, [items[i] for i in indices])
