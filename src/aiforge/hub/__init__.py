"""The catalog of pre-trained backbones that ship inside installed packages."""

from aiforge.hub.catalog import CATALOG, Backbone, get_backbone, list_backbones

__all__ = ["CATALOG", "Backbone", "get_backbone", "list_backbones"]
