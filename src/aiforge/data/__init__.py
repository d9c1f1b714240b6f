"""Data in, shared by every kind: table readers and seeded splits (each kind's own loading is its ``data.py``)."""

from aiforge.data.readers import read_table
from aiforge.data.splits import stratified_split

__all__ = ["read_table", "stratified_split"]
