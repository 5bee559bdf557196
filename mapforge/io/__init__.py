"""Readers and writers for the file formats users already have (COLMAP, transforms.json, PLY, images)."""
