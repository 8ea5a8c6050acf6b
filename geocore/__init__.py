"""geocore: worldwide image geo-localization you can see into."""

__version__ = "0.1.0"
