"""The geospatial domain plugin (IO, views, backbones and configs arrive with its issue)."""
