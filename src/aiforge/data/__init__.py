"""Data in: readers, checks and splits."""

from aiforge.data.readers import read_table
from aiforge.data.splits import stratified_split
from aiforge.data.text import TextDataset, check_test_labels, load_text_dataset, load_text_splits

__all__ = [
    "TextDataset",
    "check_test_labels",
    "load_text_dataset",
    "load_text_splits",
    "read_table",
    "stratified_split",
]
